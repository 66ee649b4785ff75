"""The preference judge in the running job: build it from its name, and run it off the
pairing path.

`JudgeSettings.judge` builds the backend that ``replay --judge`` and ``SHADOWLENS_JUDGE``
name: ``off``; ``recorded``, AlpacaEval annotation files read from `data_dir`
(`comparators.preference.RecordedJudgments`); ``litellm:MODEL``, any OpenAI-compatible chat
model (`shadowlens.streams.judge_litellm`).

`PreferenceStep` samples within the policy's ``[preference.budget]``
(`comparators.preference_budget`) and runs the judge on the sample, a live judge's calls
concurrently in a thread pool: it is the replay's enrich hook, and waits for its calls.
`PreferenceStage` is the worker's, and never waits: it plans on the event loop (cheap),
sends the pair on at once, unjudged (`Skip.LATE`, which the windows count as unjudged),
and the call to the pool (`shadowlens.streams.later.FollowUps`, shared with the semantic
model). The pairing task that sent the pair collects the finished judgment with its next
batch or timer run and produces it as a ``judgment`` record in its own transaction; the
judging side moves the pair from unjudged to judged
(`comparators.aggregate.Aggregate.add_judgment`). A call still running when the worker
stops or loses the task is lost: its pair stays unjudged, counted, never guessed. At most
`max_pending` calls are in flight; a pair drawn beyond that goes out as `Skip.BUSY`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import orjson
from shadowlens.comparators.aggregate import Later
from shadowlens.comparators.pairs import PairScore
from shadowlens.comparators.preference import (
    Judged,
    JudgeOutcome,
    PreferenceJudge,
    RecordedJudge,
    RecordedJudgments,
    Skip,
    serves_arm,
)
from shadowlens.comparators.preference_budget import (
    JudgeBudget,
    JudgePlan,
    Route,
    Spend,
    apply_judgments,
    plan_judging,
    tally,
    with_outcome,
)
from shadowlens.judge.policy import Policy
from shadowlens.streams.later import FollowUps, Update, Work, pair_key

DEFAULT_JUDGE_DATA = Path("../shared/data/alpaca_eval_judge")
LITELLM = "litellm:"


@dataclass(frozen=True, slots=True)
class JudgeSettings:
    """Which judge, and how the live one calls its model."""

    spec: str = "off"  # off | recorded | litellm:MODEL
    data_dir: Path = DEFAULT_JUDGE_DATA  # recorded: AlpacaEval annotation files (*.json)
    api_base: str | None = None  # live: an OpenAI-compatible endpoint (default: the provider's)
    api_key: str | None = None
    allow_self: bool = False  # live: may the judge model be one of the compared arms?
    timeout_s: float = 30.0  # live: per call
    retries: int = 2  # live: more attempts per call after an error or an unreadable verdict
    concurrency: int = 8  # live: calls running at once
    max_pending: int = 1000  # worker: calls in flight (running or queued)

    def __post_init__(self) -> None:
        name = self.spec.strip()
        if name not in ("off", "recorded") and not (
            name.startswith(LITELLM) and len(name) > len(LITELLM)
        ):
            raise ValueError(f"unknown judge {self.spec!r}: use off, recorded or litellm:MODEL")

    @property
    def model(self) -> str | None:
        """The live judge's model, None for the others."""
        name = self.spec.strip()
        return name.removeprefix(LITELLM) if name.startswith(LITELLM) else None

    def refuse_self_judging(self, arm_models: Sequence[str]) -> None:
        """ValueError when the live judge's model serves one of `arm_models` and judging
        its own answers was not allowed (checked before a replay reads any data)."""
        if self.model is not None and not self.allow_self and serves_arm(self.model, arm_models):
            raise ValueError(
                f"the judge {self.model!r} serves one of the compared arms "
                f"({', '.join(arm_models)}): it would judge its own answers; pick another "
                "judge or allow it explicitly (--allow-self-judge)"
            )

    def judge(self, policy: Policy) -> PreferenceJudge | None:
        """The backend, or None for ``off``. ValueError when the recorded judgments cannot
        be read; `JudgeUnavailable` when LiteLLM is not installed."""
        if self.spec.strip() == "off":
            return None
        if self.model is None:
            return RecordedJudge(load_recorded(self.data_dir))
        from shadowlens.streams.judge_litellm import LiteLLMJudge

        return LiteLLMJudge(
            self.model,
            prices=policy.prices,
            api_base=self.api_base,
            api_key=self.api_key,
            timeout_s=self.timeout_s,
            retries=self.retries,
            allow_self=self.allow_self,
        )


def load_recorded(data_dir: Path) -> RecordedJudgments:
    """Every ``*.json`` annotation file of `data_dir`, in both orders of each pair."""
    files = sorted(data_dir.glob("*.json")) if data_dir.is_dir() else []
    if not files:
        raise ValueError(
            f"no recorded judgments in {data_dir}: it needs AlpacaEval annotation files "
            "(*.json); see --judge-data"
        )
    records = [r for path in files for r in orjson.loads(path.read_bytes())]
    return RecordedJudgments.from_annotations(records)


class PreferenceStep:
    """The judge within its budget; callable as `Pipeline`'s enrich hook."""

    def __init__(self, judge: PreferenceJudge, budget: JudgeBudget, concurrency: int = 1) -> None:
        self.judge = judge
        self.budget = budget
        self.spend = Spend.start(budget)
        self.concurrency = concurrency
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge")
        self.seconds = 0.0  # wall time spent waiting for judgments

    @classmethod
    def build(cls, settings: JudgeSettings, policy: Policy) -> PreferenceStep | None:
        judge = settings.judge(policy)
        if judge is None:
            return None
        concurrency = 1 if settings.model is None else settings.concurrency  # recorded: a lookup
        return cls(judge, policy.preference.budget, concurrency)

    def plan(self, scores: Sequence[PairScore]) -> JudgePlan:
        plan, self.spend = plan_judging(scores, self.spend, self.budget)
        return plan

    def finish(self, plan: JudgePlan, outcomes: Sequence[JudgeOutcome]) -> list[PairScore]:
        """Pay for the outcomes and put them on the plan's pairs."""
        self.spend = self.spend.charged(outcomes)
        return apply_judgments(plan, outcomes)

    def __call__(self, scores: list[PairScore]) -> list[PairScore]:
        plan = self.plan(scores)
        started = time.perf_counter()
        items = plan.items
        if self.concurrency == 1:
            outcomes = [self.judge(item) for item in items]
        else:
            outcomes = list(self.pool.map(self.judge, items))
        self.seconds += time.perf_counter() - started
        return self.finish(plan, outcomes)


def _outcome(call: Future[JudgeOutcome]) -> JudgeOutcome:
    """A finished call's outcome; a call that raised is an error, not a crash of the batch."""
    return Skip.ERROR if call.exception() is not None else call.result()


class PreferenceStage:
    """The worker's judge step: pairs go out at once, judgments follow per task
    (`shadowlens.streams.later.FollowUps`)."""

    def __init__(
        self, step: PreferenceStep, counts: Counter[str], later: FollowUps, max_pending: int
    ) -> None:
        self.step = step
        self.counts = counts
        self.later = later
        self.max_pending = max_pending

    @classmethod
    def build(
        cls, settings: JudgeSettings, policy: Policy, counts: Counter[str], later: FollowUps
    ) -> PreferenceStage | None:
        step = PreferenceStep.build(settings, policy)
        return None if step is None else cls(step, counts, later, settings.max_pending)

    def enrich(self, scores: list[PairScore], task: int) -> list[PairScore]:
        """`scores` as they go out now: those routed to the judge unjudged (`Skip.LATE`),
        their calls started for `task` to collect."""
        plan = self.step.plan(scores)
        at = [i for i, route in enumerate(plan.routes) if route == Route.JUDGE]
        room = max(0, self.max_pending - self.later.in_flight(Later.JUDGMENT))
        out = self.step.finish(plan, [Skip.LATE if n < room else Skip.BUSY for n in range(len(at))])
        for i, item in zip(at[:room], plan.items, strict=False):
            call = self.step.pool.submit(self.step.judge, item)
            settle = partial(self._settle, plan.fraction)
            self.later.start(task, Work(Later.JUDGMENT, (pair_key(out[i]),), call, settle))
        self.later.sent(task, out)
        self.counts.update(tally(out))
        return out

    def _settle(self, fraction: float, call: Future[JudgeOutcome] | None) -> list[Update]:
        """A finished call's outcome, paid for and counted, as its pair's update."""
        assert call is not None  # judge calls have no deadline: the live judge times out
        outcome = _outcome(call)
        self.step.spend = self.step.spend.charged([outcome])
        judged = isinstance(outcome, Judged)
        self.counts["judgments.judged" if judged else f"judgments.{outcome}"] += 1
        return [partial(with_outcome, outcome=outcome, fraction=fraction)]

    def stop(self) -> None:
        """The worker is stopping: calls not started are not made (the process still waits
        for the running ones, each at most its attempts' timeouts, before it exits)."""
        self.step.pool.shutdown(wait=False, cancel_futures=True)
