"""Mergeable aggregates of pair scores: the sufficient statistics the judge reads.

One `Aggregate` summarises the pairs of a window (or a stage, or a segment); aggregates
merge, so stage totals are sums of windows and the global view is a sum of segments.
Latency quantiles come from DDSketch (1 % relative accuracy) so p99 costs O(log range)
memory, not O(n).

Quality under semantic sampling (`shadowlens.comparators.cascade`): a pair's `weight` is the inverse
of its chance of being measured, 0 when it was not. `quality` moments are weighted, so the
window mean is unbiased; `quality_seq` keeps the measured values, unweighted, for the
judge's sequential bound (a uniform sample: n is what was measured). Every other statistic
counts each pair once.

LLM signals (`shadowlens.comparators.signals`) are counted over the pairs they apply to. Refusal and
truncation are yes/no outcomes of both arms on the same request, so they keep paired
tables (`PairedCounts`) like failures: the judge reads refusals with the same McNemar test
as errors. Each kind of signal keeps a few example request ids.

The preference judge (`shadowlens.comparators.preference_budget`) adds each judged pair's
win (weighted by 1 / p like quality, and unweighted in `preference_seq`), its wins by length
difference (`LengthBins`, for the length-adjusted win rate) and the lost comparisons; every
text pair adds what the judge's guard reads: lexical similarity, length ratio and whether
the candidate switched language.

Nothing here depends on the order pairs arrive in, which a restart or another batching
changes: per-request observations carry their request's `order_key` and the judge reads
them in that order (`in_order`), and example ids are those with the lowest keys. Only
float sums can differ, in their last bits.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from dataclasses import dataclass, field
from enum import StrEnum

from ddsketch import DDSketch
from shadowlens.comparators.pairs import Outcome, PairScore

RELATIVE_ACCURACY = 0.01
EXAMPLES = 3  # request ids kept per kind of evidence
# the kinds of signal with example ids (`Aggregate.signal_ids`): the candidate-side event
SIGNAL_KINDS = (
    "refusal",  # the candidate refused where the primary answered
    "truncation",  # the candidate was cut off where the primary was not
    "number_mismatch",
    "negation_mismatch",
    "invalid_json",  # the candidate's JSON
    "schema_misfit",
    "label_flip",
    "language_change",  # the candidate answered in another language
)
LENGTH_BINS = 11  # odd: equal lengths (x = 0) fall in the middle bin's centre
MIN_LENGTH_RATIO = 1e-3  # an empty answer counts as 1/1000 of the primary's length


class Later(StrEnum):
    """A costly score that may follow its pair: the worker sends a pair on before the
    preference judge or the semantic model has scored it, and the score after it."""

    JUDGMENT = "judgment"  # the judge's verdict (`Aggregate.add_judgment`)
    SEMANTIC = "semantic"  # the semantic model's similarity (`Aggregate.add_semantic`)


def order_key(request_id: str) -> int:
    """A request's place in the judge's reading order: a 53-bit hash of its id, which
    depends neither on when the pair arrived nor on its outcome (an order fixed before the
    values are seen keeps the sequential bounds valid)."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest) >> 11


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
class PairedMoments:
    """Sums of two quantities measured on the same requests (the primary's and the
    candidate's cost): enough for the mean and variance of any a * x + b * y per request,
    which is how the judge tests "candidate within (1 + margin) x primary" on the pairs."""

    n: int = 0
    sum_x: float = 0.0
    sum_y: float = 0.0
    sum_xx: float = 0.0
    sum_yy: float = 0.0
    sum_xy: float = 0.0

    def add(self, x: float, y: float) -> None:
        self.n += 1
        self.sum_x += x
        self.sum_y += y
        self.sum_xx += x * x
        self.sum_yy += y * y
        self.sum_xy += x * y

    def merge(self, other: PairedMoments) -> None:
        self.n += other.n
        self.sum_x += other.sum_x
        self.sum_y += other.sum_y
        self.sum_xx += other.sum_xx
        self.sum_yy += other.sum_yy
        self.sum_xy += other.sum_xy

    def linear(self, a: float, b: float) -> tuple[int, float, float]:
        """(n, mean, sum of squared deviations) of a * x + b * y over the pairs."""
        if not self.n:
            return 0, 0.0, 0.0
        total = a * self.sum_x + b * self.sum_y
        squares = a * a * self.sum_xx + 2 * a * b * self.sum_xy + b * b * self.sum_yy
        mean = total / self.n
        return self.n, mean, max(0.0, squares - self.n * mean * mean)


@dataclass(slots=True)
class PairedCounts:
    """A yes/no outcome of both arms on the same requests (failed, refused, truncated): the
    totals per arm and the discordant pairs a McNemar test reads."""

    n: int = 0
    primary: int = 0
    candidate: int = 0
    only_candidate: int = 0  # McNemar b
    only_primary: int = 0  # McNemar c

    def add(self, primary: bool, candidate: bool) -> None:
        self.n += 1
        self.primary += primary
        self.candidate += candidate
        self.only_candidate += candidate and not primary
        self.only_primary += primary and not candidate

    def merge(self, other: PairedCounts) -> None:
        self.n += other.n
        self.primary += other.primary
        self.candidate += other.candidate
        self.only_candidate += other.only_candidate
        self.only_primary += other.only_primary

    def rate(self, arm: str) -> float | None:
        if not self.n:
            return None
        return (self.candidate if arm == "candidate" else self.primary) / self.n


@dataclass(slots=True)
class LengthBins:
    """Judged wins by the answers' length difference ``x = tanh(log(candidate / primary
    length))``, in `LENGTH_BINS` equal bins over [-1, 1]: what the length-adjusted win rate
    (`shadowlens.judge.stats_length`) is fitted on."""

    wins: list[float] = field(default_factory=lambda: [0.0] * LENGTH_BINS)
    counts: list[int] = field(default_factory=lambda: [0] * LENGTH_BINS)

    def add(self, length_ratio: float, win: float) -> None:
        x = math.tanh(math.log(max(length_ratio, MIN_LENGTH_RATIO)))
        i = min(LENGTH_BINS - 1, int((x + 1) / 2 * LENGTH_BINS))
        self.wins[i] += win
        self.counts[i] += 1

    def merge(self, other: LengthBins) -> None:
        self.wins = [a + b for a, b in zip(self.wins, other.wins, strict=True)]
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]

    @staticmethod
    def centers() -> list[float]:
        return [-1 + (2 * i + 1) / LENGTH_BINS for i in range(LENGTH_BINS)]


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
    quality_unsampled: int = 0  # pairs whose quality was not measured (semantic budget, or not yet)
    # signals, over the pairs where both arms' value is known
    refusals: PairedCounts = field(default_factory=PairedCounts)
    truncations: PairedCounts = field(default_factory=PairedCounts)
    number_mismatches: int = 0  # pairs whose answers' number sets differ
    negation_mismatches: int = 0  # pairs with a clause of opposite polarity
    primary_invalid_json: int = 0  # extraction answers that are not JSON
    candidate_invalid_json: int = 0
    schema_misfits: int = 0  # candidate JSON off the schema (or the primary's shape)
    label_flips: int = 0
    language_changes: int = 0  # pairs whose candidate answered in another language
    preference_judged: int = 0  # pairs with the judge's verdict
    preference_unjudged: int = 0  # eligible pairs without one (budget, unknown, error, late, ...)
    judge_cost_usd: float = 0.0
    quality: Moments = field(default_factory=Moments)
    preference: Moments = field(default_factory=Moments)  # the candidate's win, weighted 1 / p
    preference_by_length: LengthBins = field(default_factory=LengthBins)
    log_length_ratio: Moments = field(default_factory=Moments)  # log(candidate / primary)
    log_latency_ratio: Moments = field(default_factory=Moments)
    primary_cost_usd: Moments = field(default_factory=Moments)
    candidate_cost_usd: Moments = field(default_factory=Moments)
    paired_cost_usd: PairedMoments = field(default_factory=PairedMoments)  # (primary, candidate)
    quality_tasks: dict[str, int] = field(default_factory=dict)  # task -> measured qualities
    primary_latency_ms: DDSketch = field(default_factory=new_sketch)
    candidate_latency_ms: DDSketch = field(default_factory=new_sketch)
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    # (score, request id) heaps: the worst examples, kept small
    worst_quality: list[tuple[float, str]] = field(default_factory=list)
    slowest_ratio: list[tuple[float, str]] = field(default_factory=list)
    lost_preference: list[tuple[float, str]] = field(default_factory=list)  # (1 - win, id)
    failed_ids: list[str] = field(default_factory=list)
    signal_ids: dict[str, list[str]] = field(default_factory=dict)  # kind -> request ids
    # per-request observations in arrival order, for the judge's sequential bounds, and
    # their requests' `order_key`s (`in_order`); kept for one window only (`summary()`
    # drops them)
    primary_failed_seq: list[int] = field(default_factory=list)
    candidate_failed_seq: list[int] = field(default_factory=list)
    quality_seq: list[float] = field(default_factory=list)
    primary_refused_seq: list[int] = field(default_factory=list)  # pairs in `refusals`
    candidate_refused_seq: list[int] = field(default_factory=list)
    failed_keys: list[int] = field(default_factory=list)
    quality_keys: list[int] = field(default_factory=list)
    refused_keys: list[int] = field(default_factory=list)
    preference_seq: list[float] = field(default_factory=list)  # judged wins
    lexical_seq: list[float] = field(default_factory=list)  # every text pair's
    language_seq: list[int] = field(default_factory=list)  # pairs with both languages known
    preference_keys: list[int] = field(default_factory=list)
    text_keys: list[int] = field(default_factory=list)
    language_keys: list[int] = field(default_factory=list)
    # (log primary ms, log candidate ms) of the pairs where both answered: the judge's
    # paired p99 gate reads the slow end of these
    latency_seq: list[tuple[float, float]] = field(default_factory=list)
    latency_keys: list[int] = field(default_factory=list)

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
        key = order_key(score.request_id)
        self.primary_failures += p_fail
        self.candidate_failures += c_fail
        self.only_candidate_failed += c_fail and not p_fail
        self.only_primary_failed += p_fail and not c_fail
        self.primary_failed_seq.append(int(p_fail))
        self.candidate_failed_seq.append(int(c_fail))
        self.failed_keys.append(key)
        if c_fail:
            self.failed_ids = _lowest([*self.failed_ids, score.request_id])
        if score.primary_latency_ms is not None and score.primary_status == "ok":
            self.primary_latency_ms.add(max(score.primary_latency_ms, 1e-3))
        if score.candidate_latency_ms is not None and score.candidate_status == "ok":
            self.candidate_latency_ms.add(max(score.candidate_latency_ms, 1e-3))
        if score.primary_cost_usd is not None:
            self.primary_cost_usd.add(score.primary_cost_usd)
        if score.candidate_cost_usd is not None:
            self.candidate_cost_usd.add(score.candidate_cost_usd)
        if score.primary_cost_usd is not None and score.candidate_cost_usd is not None:
            self.paired_cost_usd.add(score.primary_cost_usd, score.candidate_cost_usd)
        if score.exact_match:
            self.exact_matches += 1
        quality = score.quality
        if score.weight == 0:  # not drawn by the semantic budget (or not scored yet)
            self.quality_unsampled += 1
        elif quality is not None:
            self._add_quality(score, quality, key)
        if score.latency_ratio is not None and score.latency_ratio > 0:
            self.log_latency_ratio.add(math.log(score.latency_ratio))
            _keep_top(self.slowest_ratio, (score.latency_ratio, score.request_id))
            if score.primary_latency_ms and score.candidate_latency_ms:
                logs = (math.log(score.primary_latency_ms), math.log(score.candidate_latency_ms))
                self.latency_seq.append(logs)
                self.latency_keys.append(key)
        self._add_signals(score, key)
        self._add_preference(score, key)

    def _add_quality(self, s: PairScore, quality: float, key: int) -> None:
        self.quality_measured += 1
        self.quality.add(quality, s.weight)
        self.quality_seq.append(quality)
        self.quality_keys.append(key)
        self.quality_tasks[s.task] = self.quality_tasks.get(s.task, 0) + 1
        _keep_top(self.worst_quality, (-quality, s.request_id))

    def add_semantic(self, score: PairScore) -> None:
        """A semantic score that came after its pair (the worker's encoder runs off the
        pairing path): the pair was added unscored, weight 0, so counted unsampled; the
        score moves it from unsampled to measured and adds only its quality. As with
        `add_judgment`, the merged totals equal those of the pair added scored, whichever
        window takes the score, and a window that takes one for a pair of a closed window
        may count fewer unsampled pairs than it holds (below zero)."""
        quality = score.quality
        if quality is None or score.weight == 0:
            return
        self.quality_unsampled -= 1
        self._add_quality(score, quality, order_key(score.request_id))

    def add_later(self, score: PairScore, what: Later) -> None:
        """A score of kind `what` that followed its pair."""
        if what == Later.JUDGMENT:
            self.add_judgment(score)
        else:
            self.add_semantic(score)

    def _add_signals(self, s: PairScore, key: int) -> None:
        """Count the pair's signals; None (not applicable) counts nowhere."""
        rid = s.request_id
        p, c = s.primary_refusal, s.candidate_refusal
        if p is not None and c is not None:
            self.refusals.add(p, c)
            self.primary_refused_seq.append(int(p))
            self.candidate_refused_seq.append(int(c))
            self.refused_keys.append(key)
            if c and not p:
                self._example("refusal", rid)
        p, c = s.primary_truncated, s.candidate_truncated
        if p is not None and c is not None:
            self.truncations.add(p, c)
            if c and not p:
                self._example("truncation", rid)
        if s.number_mismatch:  # a distance above 0
            self.number_mismatches += 1
            self._example("number_mismatch", rid)
        if s.negation_mismatch:
            self.negation_mismatches += 1
            self._example("negation_mismatch", rid)
        self.primary_invalid_json += s.primary_json_valid is False
        if s.candidate_json_valid is False:
            self.candidate_invalid_json += 1
            self._example("invalid_json", rid)
        if s.json_schema_ok is False:
            self.schema_misfits += 1
            self._example("schema_misfit", rid)
        if s.label_flip is not None:
            self.label_flips += 1
            self._example("label_flip", rid)
        if s.language_changed is not None:
            self.language_seq.append(int(s.language_changed))
            self.language_keys.append(key)
            if s.language_changed:
                self.language_changes += 1
                self._example("language_change", rid)

    def _add_preference(self, s: PairScore, key: int) -> None:
        """The judge's verdict, and what its guard reads of every text pair."""
        if s.lexical_similarity is not None:
            self.lexical_seq.append(s.lexical_similarity)
            self.text_keys.append(key)
        if s.length_ratio is not None:
            self.log_length_ratio.add(math.log(max(s.length_ratio, MIN_LENGTH_RATIO)))
        if s.preference is None:
            self.preference_unjudged += s.preference_skip is not None
            return
        self._add_verdict(s, s.preference, key)

    def add_judgment(self, score: PairScore) -> None:
        """A judgment that came after its pair (the worker's judge runs off the pairing
        path): the pair was added without one, counted unjudged (``Skip.LATE``), so a
        verdict moves it from unjudged to judged and adds only what the verdict adds; a
        failed call changes nothing. Added to the window that counted the pair, or to a
        later one, the merged totals equal those of the pair added judged. A window that
        takes a late verdict may count fewer unjudged pairs than it holds (below zero):
        its pair is counted in an earlier window."""
        if score.preference is None:
            return
        self.preference_unjudged -= 1
        self._add_verdict(score, score.preference, order_key(score.request_id))

    def _add_verdict(self, s: PairScore, win: float, key: int) -> None:
        self.preference_judged += 1
        self.judge_cost_usd += s.judge_cost_usd or 0.0
        self.preference.add(win, s.preference_weight)
        self.preference_seq.append(win)
        self.preference_keys.append(key)
        if s.length_ratio is not None:
            self.preference_by_length.add(s.length_ratio, win)
        if win < 0.5:
            _keep_top(self.lost_preference, (1.0 - win, s.request_id))

    def _example(self, kind: str, request_id: str) -> None:
        self.signal_ids[kind] = _lowest([*self.signal_ids.get(kind, ()), request_id])

    def merge(self, other: Aggregate) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in _MERGEABLE:
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
        for item in other.lost_preference:
            _keep_top(self.lost_preference, item)
        self.failed_ids = _lowest(self.failed_ids + other.failed_ids)
        for task, count in other.quality_tasks.items():
            self.quality_tasks[task] = self.quality_tasks.get(task, 0) + count
        for kind, ids in other.signal_ids.items():
            self.signal_ids[kind] = _lowest(self.signal_ids.get(kind, []) + ids)
        for name in _SEQUENCES:
            getattr(self, name).extend(getattr(other, name))

    def in_order(self) -> Aggregate:
        """A copy whose per-request observations are in `order_key` order, not arrival
        order, which a restart or another batching changes: the judge's sequential bounds
        then depend only on which pairs were seen. A window written before keys were kept
        (an older changelog) stays in arrival order."""
        out = merged([self])
        for key_name, names in _KEYED.items():
            keys = getattr(out, key_name)
            seqs = [getattr(out, name) for name in names]
            if any(len(seq) != len(keys) for seq in seqs):
                continue
            order = sorted(range(len(keys)), key=keys.__getitem__)
            for name, seq in zip((key_name, *names), (keys, *seqs), strict=True):
                setattr(out, name, [seq[i] for i in order])
        return out

    def summary(self) -> Aggregate:
        """A copy without the per-request observations: what a stage keeps for long."""
        total = merged([self])
        for name in _SEQUENCES:
            setattr(total, name, [])
        return total

    @property
    def failures(self) -> PairedCounts:
        """Failures as a paired table over the judged requests (a missing half fails)."""
        return PairedCounts(
            self.n_requests,
            self.primary_failures,
            self.candidate_failures,
            self.only_candidate_failed,
            self.only_primary_failed,
        )

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
        """Request ids that best show a problem of `kind`: quality, latency, preference (the
        comparisons the candidate lost worst), errors or one of `SIGNAL_KINDS`."""
        if kind == "quality":
            return [rid for _, rid in sorted(self.worst_quality, reverse=True)]
        if kind == "preference":
            return [rid for _, rid in sorted(self.lost_preference, reverse=True)]
        if kind == "latency":
            return [rid for _, rid in sorted(self.slowest_ratio, reverse=True)]
        if kind in SIGNAL_KINDS:
            return list(self.signal_ids.get(kind, ()))
        return list(self.failed_ids)


_COUNTS = (
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
    "number_mismatches",
    "negation_mismatches",
    "primary_invalid_json",
    "candidate_invalid_json",
    "schema_misfits",
    "label_flips",
    "language_changes",
    "preference_judged",
    "preference_unjudged",
    "judge_cost_usd",
)
_MERGEABLE = (
    "quality",
    "preference",
    "preference_by_length",
    "log_length_ratio",
    "log_latency_ratio",
    "primary_cost_usd",
    "candidate_cost_usd",
    "paired_cost_usd",
    "refusals",
    "truncations",
)
# per-request observations by their requests' keys (one window's; `summary()` drops them)
_KEYED = {
    "failed_keys": ("primary_failed_seq", "candidate_failed_seq"),
    "quality_keys": ("quality_seq",),
    "refused_keys": ("primary_refused_seq", "candidate_refused_seq"),
    "preference_keys": ("preference_seq",),
    "text_keys": ("lexical_seq",),
    "language_keys": ("language_seq",),
    "latency_keys": ("latency_seq",),
}
_SEQUENCES = tuple(name for key, names in _KEYED.items() for name in (key, *names))


def merged(aggregates: list[Aggregate]) -> Aggregate:
    total = Aggregate()
    for agg in aggregates:
        total.merge(agg)
    return total


def _keep_top(heap: list[tuple[float, str]], item: tuple[float, str]) -> None:
    """Keep the top `EXAMPLES` items; sorted, so the list is the same whatever the order
    the items came in (a sorted list is a heap)."""
    if len(heap) < EXAMPLES:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)
    heap.sort()


def _lowest(ids: list[str]) -> list[str]:
    """The example ids to keep: the `EXAMPLES` lowest `order_key`s, whatever came first."""
    return sorted(set(ids), key=order_key)[:EXAMPLES]
