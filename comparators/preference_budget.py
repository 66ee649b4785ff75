"""Which pairs the preference judge sees, and how many it may see.

A judge call costs seconds and money, so like the semantic cascade
(`shadowlens.comparators.cascade`) the judge sees a budgeted sample:

1. Only the candidate's text answers to a text task are *eligible* (`cascade.eligible`, and
   the candidate comparison: a replica is the primary's second sample, nothing to promote).
2. Every eligible pair of a batch is drawn with the same probability ``p`` before its
   content is looked at, by a hash of its request id (`comparators.sampling`): the same
   request is drawn again after a restart, and on any worker. ``p = allowance / eligible
   pairs`` (floored at ``min_sample_fraction``) from a token bucket in pairs per second of
   event time.
3. Spend is capped too: ``max_usd_per_day`` spreads into the rate (pairs per second times
   the mean cost of a judgment stays under the daily cap) and, as a hard stop, no pair is
   drawn once an event-time day's spend reaches it.
4. A drawn pair whose answers are identical (normalised) is a tie without a call
   (``Route.EXACT``): an identical candidate is exactly at parity. The others go to the
   judge (``Route.JUDGE``).

A judged pair carries ``preference_weight = 1 / p`` (window means of the win are unbiased);
an eligible pair without a judgment carries weight 0 and says why (`Skip`). The judge's
sequential bound reads the judged wins unweighted: a uniform sample of pairs that share a
mean has that mean too. Pure: the backend's outcomes are passed in; no clock, no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from shadowlens.comparators.cascade import Budget, eligible, sample_fraction
from shadowlens.comparators.pairs import PairScore
from shadowlens.comparators.preference import TIE, Judged, JudgeItem, JudgeOutcome, Skip
from shadowlens.comparators.sampling import drawn

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class JudgeBudget:
    """The judge's budget (the policy's ``[preference.budget]`` table)."""

    max_pairs_per_s: float = 20.0  # pairs judged per second of event time; 0: no cap
    burst_pairs: int = 200  # unused allowance kept for bursts, in pairs
    min_sample_fraction: float = 0.01  # over the pairs budget, never judge less
    max_usd_per_day: float = 50.0  # judge spend per event-time day; 0: no cap

    def __post_init__(self) -> None:
        if self.max_pairs_per_s < 0 or self.burst_pairs < 1 or self.max_usd_per_day < 0:
            raise ValueError("max_pairs_per_s and max_usd_per_day must be >= 0, burst_pairs >= 1")
        if not 0 < self.min_sample_fraction <= 1:
            raise ValueError("min_sample_fraction must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class Spend:
    """The judge's budget state: its token bucket and what it spent."""

    bucket: Budget
    day: int = -1  # event-time day (epoch ms // DAY_MS) `day_usd` is for
    day_usd: float = 0.0
    paid_judgments: int = 0  # judgments that cost something, for the mean cost
    total_usd: float = 0.0

    @classmethod
    def start(cls, budget: JudgeBudget) -> Spend:
        return cls(Budget.full(budget))

    @property
    def mean_cost_usd(self) -> float:
        return self.total_usd / self.paid_judgments if self.paid_judgments else 0.0

    def rate(self, budget: JudgeBudget) -> JudgeBudget:
        """The pairs budget, lowered so that judgments at their mean cost stay within
        ``max_usd_per_day`` over a day."""
        cost = self.mean_cost_usd
        if budget.max_usd_per_day == 0 or cost == 0:
            return budget
        affordable = budget.max_usd_per_day / (DAY_MS / 1000) / cost
        if budget.max_pairs_per_s and budget.max_pairs_per_s <= affordable:
            return budget
        return replace(budget, max_pairs_per_s=affordable)

    def charged(self, outcomes: Sequence[JudgeOutcome]) -> Spend:
        """This state after paying for `outcomes`."""
        costs = [o.cost_usd for o in outcomes if isinstance(o, Judged) and o.cost_usd > 0]
        return replace(
            self,
            day_usd=self.day_usd + sum(costs),
            paid_judgments=self.paid_judgments + len(costs),
            total_usd=self.total_usd + sum(costs),
        )


SALT = b"preference"  # independent of the semantic sample


class Route(StrEnum):
    SKIP = "skip"  # not eligible: untouched
    EXACT = "exact"  # drawn, identical answers: a tie without a call
    JUDGE = "judge"  # drawn: the judge decides
    UNSAMPLED = "unsampled"  # not drawn (over budget): weight 0


def judge_eligible(score: PairScore) -> bool:
    """The candidate's text answer to a text task, with the primary's."""
    return score.comparison == "candidate" and eligible(score)


@dataclass(frozen=True, slots=True)
class JudgePlan:
    """One batch's routes; `items` is what the judge must see, in route order."""

    scores: tuple[PairScore, ...]
    routes: tuple[Route, ...]
    fraction: float

    @property
    def items(self) -> list[JudgeItem]:
        return [
            JudgeItem(
                s.request_id,
                s.prompt,
                s.primary_body,
                s.candidate_body,
                s.primary_model,
                s.candidate_model,
            )
            for s, r in zip(self.scores, self.routes, strict=True)
            if r == Route.JUDGE
        ]


def plan_judging(
    scores: Sequence[PairScore], spend: Spend, budget: JudgeBudget
) -> tuple[JudgePlan, Spend]:
    """Route one batch and charge the bucket for the pairs sent to the judge."""
    if not scores:
        return JudgePlan((), (), 1.0), spend
    now_ms = max(s.event_time_ms for s in scores)
    day = now_ms // DAY_MS
    if day > spend.day:
        spend = replace(spend, day=day, day_usd=0.0)
    rate = spend.rate(budget)
    spend = replace(spend, bucket=spend.bucket.refill(now_ms, rate))
    ok = [judge_eligible(s) for s in scores]
    needed = sum(e and not s.exact_match for e, s in zip(ok, scores, strict=True))
    broke = budget.max_usd_per_day > 0 and spend.day_usd >= budget.max_usd_per_day
    p = 0.0 if broke else sample_fraction(needed, spend.bucket.allowance, rate)
    routes = tuple(
        Route.SKIP
        if not e
        else Route.UNSAMPLED
        if not drawn(s.request_id, p, SALT)
        else Route.EXACT
        if s.exact_match
        else Route.JUDGE
        for s, e in zip(scores, ok, strict=True)
    )
    spent = sum(r == Route.JUDGE for r in routes)
    bucket = Budget(spend.bucket.allowance - spent, spend.bucket.clock_ms)
    return JudgePlan(tuple(scores), routes, p), replace(spend, bucket=bucket)


def apply_judgments(plan: JudgePlan, outcomes: Sequence[JudgeOutcome]) -> list[PairScore]:
    """The batch with the judge's outcomes; `outcomes` follow `plan.items`."""
    results = iter(outcomes)
    weight = 1.0 / plan.fraction if plan.fraction > 0 else 0.0
    out = []
    for score, route in zip(plan.scores, plan.routes, strict=True):
        if route == Route.EXACT:
            score = replace(score, preference=TIE, preference_weight=weight, judge_cost_usd=0.0)
        elif route == Route.UNSAMPLED:
            score = replace(score, preference_skip=str(Skip.BUDGET))
        elif route == Route.JUDGE:
            score = with_outcome(score, next(results), plan.fraction)
        out.append(score)
    if next(results, None) is not None:
        raise ValueError("more judge outcomes than pairs routed to the judge")
    return out


def with_outcome(score: PairScore, outcome: JudgeOutcome, fraction: float) -> PairScore:
    """A pair routed to the judge in a sample of share `fraction`, with the judge's outcome:
    a verdict weighs 1 / `fraction`, anything else is the reason there is none."""
    if not isinstance(outcome, Judged):
        return replace(score, preference_skip=str(outcome))
    return replace(
        score,
        preference=outcome.win,
        preference_weight=1.0 / fraction,
        preference_skip=None,
        judge_cost_usd=outcome.cost_usd,
    )


def tally(scores: Sequence[PairScore]) -> Counter[str]:
    """Judge counters of scored pairs: judged, and each reason for not judging. Empty when
    the judge is off."""
    out: Counter[str] = Counter()
    for s in scores:
        if s.preference is not None:
            out["preference.judged"] += 1
        elif s.preference_skip is not None:
            out[f"preference.{s.preference_skip}"] += 1
    return out
