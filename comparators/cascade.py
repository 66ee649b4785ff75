"""The semantic cascade: which pairs the embedding model sees, and how many it may see.

Cheapest first, per pair:

1. Not a text answer from both arms (classification, extraction and embedding tasks, a
   failed or missing arm): its quality comes from labels, JSON fields or vectors, so the
   model is never needed (``Route.SKIP``; the pair is left as it is).
2. The other pairs are *eligible*. Lexical similarity is already on every pair
   (`comparators.pairs`) and stays the quality when semantic scoring is off, but it cannot
   settle meaning ("compatible" vs "not compatible"), so it never stands in for the model.
   A normalised exact match does: similarity 1.0 without the model (``Route.EXACT``).
3. The remaining eligible pairs go to the model (``Route.EMBED``) within a budget in pairs
   per second of event time (a token bucket, so a replay is deterministic).

Over budget, a uniform sample is scored. Every eligible pair of the batch is drawn with
the same probability ``p = allowance / pairs needing the model`` (floored at
``min_sample_fraction``), by a salted hash of its request id (`comparators.sampling`), before
its content is looked at -- exact matches too; the shortcut only saves the model call. A
replay, a restart or another worker scoring the same pairs draws the same ones. So:

* a measured pair carries ``weight = 1 / p``; an unmeasured one ``weight = 0`` and no
  semantic score (``Route.UNSAMPLED``). Weighted window means of quality
  (`comparators.aggregate`) are unbiased even when the load, and so p, varies with quality;
* the judge reads the measured values only, unweighted: a uniform subsample of pairs that
  share a mean has that mean too, so its always-valid bound keeps its guarantee with n =
  the measured pairs (never inflated by the weights).

The weight only concerns the costly scores: latency, errors and cost ignore it. The worker
sends a batch that needs the model ahead of its scores (`ahead`: every drawn pair
unmeasured, exact matches too) and the scores after it (`similarities`,
`with_similarity`), each pairing task within its `Share` of the budget. Pure: the encoder
is passed in; no clock, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from shadowlens.comparators.pairs import PairScore
from shadowlens.comparators.sampling import drawn
from shadowlens.comparators.semantic import Encoder, semantic_similarity
from shadowlens.schemas.events import Task

NOT_TEXT_TASKS = frozenset({Task.CLASSIFICATION, Task.EMBEDDING, Task.EXTRACTION})


class Rate(Protocol):
    """What a token bucket of pairs reads from its policy (`SemanticPolicy`, and the
    preference judge's `comparators.preference_budget.JudgeBudget`)."""

    @property
    def max_pairs_per_s(self) -> float: ...
    @property
    def burst_pairs(self) -> float: ...
    @property
    def min_sample_fraction(self) -> float: ...


@dataclass(frozen=True, slots=True)
class SemanticPolicy:
    """The embedding budget (the policy's ``[semantic]`` table): over it, a uniform sample
    is scored."""

    max_pairs_per_s: float = 50.0  # pairs sent to the model per second of event time; 0: no cap
    burst_pairs: int = 500  # unused allowance kept for bursts, in pairs
    min_sample_fraction: float = 0.05  # never sample less: every batch keeps some evidence

    def __post_init__(self) -> None:
        if self.max_pairs_per_s < 0 or self.burst_pairs < 1:
            raise ValueError("semantic.max_pairs_per_s must be >= 0 and burst_pairs >= 1")
        if not 0 < self.min_sample_fraction <= 1:
            raise ValueError("semantic.min_sample_fraction must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class Share:
    """One pairing task's part of a budget that `parts` tasks share (the worker: one per
    events partition): the rate and the burst divided by `parts`, the sample floor as is.
    Each task keeps its own bucket, so however tasks are spread over workers, all of them
    together never send the model more than the policy allows."""

    max_pairs_per_s: float
    burst_pairs: float
    min_sample_fraction: float

    @classmethod
    def of(cls, policy: Rate, parts: int) -> Share:
        return cls(
            policy.max_pairs_per_s / parts, policy.burst_pairs / parts, policy.min_sample_fraction
        )


class Route(StrEnum):
    SKIP = "skip"  # not a text pair: untouched
    EXACT = "exact"  # drawn, normalised exact match: 1.0 without the model
    EMBED = "embed"  # drawn: the model scores it
    UNSAMPLED = "unsampled"  # not drawn (over budget): weight 0, no semantic score


DRAWN = (Route.EXACT, Route.EMBED)


def eligible(score: PairScore) -> bool:
    """Both arms answered with text on a task whose quality is a text similarity."""
    # lexical similarity is set only on pairs where both arms succeeded with text
    return score.task not in NOT_TEXT_TASKS and score.lexical_similarity is not None


@dataclass(frozen=True, slots=True)
class Budget:
    """Token bucket in event time: `allowance` pairs may go to the model now."""

    allowance: float
    clock_ms: int | None = None

    @classmethod
    def full(cls, policy: Rate) -> Budget:
        return cls(float(policy.burst_pairs))

    def refill(self, now_ms: int, policy: Rate) -> Budget:
        if self.clock_ms is None:
            return Budget(self.allowance, now_ms)
        elapsed_ms = max(0, now_ms - self.clock_ms)
        allowance = self.allowance + policy.max_pairs_per_s * elapsed_ms / 1000.0
        return Budget(min(float(policy.burst_pairs), allowance), max(now_ms, self.clock_ms))


def sample_fraction(needed: int, allowance: float, policy: Rate) -> float:
    """The share of eligible pairs to score so that the expected model calls fit."""
    if policy.max_pairs_per_s == 0 or needed <= allowance:
        return 1.0
    return max(policy.min_sample_fraction, max(allowance, 0.0) / needed)


@dataclass(frozen=True, slots=True)
class Plan:
    """One batch's routes; `texts` is what the encoder must score, in route order."""

    scores: tuple[PairScore, ...]
    routes: tuple[Route, ...]
    fraction: float

    @property
    def texts(self) -> list[tuple[str, str]]:
        return [
            (s.primary_body, s.candidate_body)
            for s, r in zip(self.scores, self.routes, strict=True)
            if r == Route.EMBED
        ]


SALT = b"semantic"


def plan_batch(scores: Sequence[PairScore], budget: Budget, policy: Rate) -> tuple[Plan, Budget]:
    """Route one batch and charge the budget for the pairs sent to the model."""
    if not scores:
        return Plan((), (), 1.0), budget
    budget = budget.refill(max(s.event_time_ms for s in scores), policy)
    ok = [eligible(s) for s in scores]
    needed = sum(e and not s.exact_match for e, s in zip(ok, scores, strict=True))
    p = sample_fraction(needed, budget.allowance, policy)
    routes = tuple(
        Route.SKIP
        if not e
        else Route.UNSAMPLED
        if not drawn(s.request_id, p, SALT)
        else Route.EXACT
        if s.exact_match
        else Route.EMBED
        for s, e in zip(scores, ok, strict=True)
    )
    spent = sum(r == Route.EMBED for r in routes)
    return Plan(tuple(scores), routes, p), Budget(budget.allowance - spent, budget.clock_ms)


def similarities(plan: Plan, encoded: Sequence[float]) -> list[float]:
    """One similarity per drawn pair, in route order: 1.0 for an exact match, the model's
    for the others; `encoded` follows `plan.texts`."""
    sims = iter(encoded)
    out = [1.0 if r == Route.EXACT else float(next(sims)) for r in plan.routes if r in DRAWN]
    if next(sims, None) is not None:
        raise ValueError("more similarities than pairs routed to the model")
    return out


def with_similarity(score: PairScore, similarity: float, fraction: float) -> PairScore:
    """A drawn pair of a sample of share `fraction`, measured: it weighs 1 / `fraction`."""
    return replace(score, semantic_similarity=similarity, weight=1.0 / fraction)


def unmeasured(score: PairScore) -> PairScore:
    """An eligible pair without a semantic score: weight 0, no quality evidence."""
    return replace(score, semantic_similarity=None, weight=0.0)


def apply_plan(plan: Plan, encoded: Sequence[float]) -> list[PairScore]:
    """The batch with semantic scores and weights; `encoded` follows `plan.texts`."""
    sims = iter(similarities(plan, encoded))
    return [
        with_similarity(score, next(sims), plan.fraction)
        if route in DRAWN
        else unmeasured(score)
        if route == Route.UNSAMPLED
        else score
        for score, route in zip(plan.scores, plan.routes, strict=True)
    ]


def ahead(plan: Plan) -> list[PairScore]:
    """The batch as it goes out before the model scored it (the worker): every drawn pair,
    exact matches too, unmeasured until its score follows (`Aggregate.add_semantic`), so a
    batch whose encode fails leaves no exact-match-only remainder in the measured sample."""
    return [
        unmeasured(score) if route in (*DRAWN, Route.UNSAMPLED) else score
        for score, route in zip(plan.scores, plan.routes, strict=True)
    ]


def tally(scores: Sequence[PairScore]) -> Counter[str]:
    """Semantic counters of scored pairs: measured (by the model or the exact-match
    shortcut) and unsampled (over budget). Empty when semantic scoring is off."""
    out: Counter[str] = Counter()
    for s in scores:
        if s.semantic_similarity is not None:
            out["semantic.measured"] += 1
        elif s.weight == 0:
            out["semantic.unsampled"] += 1
    return out


def sampled_fraction(counts: Counter[str]) -> float | None:
    """Share of eligible pairs measured, from `tally` counters; None when none were seen."""
    measured, unsampled = counts["semantic.measured"], counts["semantic.unsampled"]
    total = measured + unsampled
    return measured / total if total else None


class SemanticCascade:
    """The cascade with its budget; callable as `Pipeline`'s enrich hook.

    `plan` and `apply_plan` are split so that a caller on an event loop can run the
    encoder (the `texts` of the plan) in an executor between them.
    """

    def __init__(self, encoder: Encoder, policy: SemanticPolicy) -> None:
        self.encoder = encoder
        self.policy = policy
        self.budget = Budget.full(policy)

    def plan(self, scores: Sequence[PairScore]) -> Plan:
        plan, self.budget = plan_batch(scores, self.budget, self.policy)
        return plan

    def __call__(self, scores: list[PairScore]) -> list[PairScore]:
        plan = self.plan(scores)
        return apply_plan(plan, semantic_similarity(self.encoder, plan.texts).tolist())
