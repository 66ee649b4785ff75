"""The preference judge in the running job: build it from its name, and run it off the
pairing path.

`JudgeSettings.judge` builds the backend that ``replay --judge`` and ``SHADOWLENS_JUDGE``
name: ``off``; ``recorded``, AlpacaEval annotation files read from `data_dir`
(`comparators.preference.RecordedJudgments`); ``litellm:MODEL``, any OpenAI-compatible chat
model (`shadowlens.streams.judge_litellm`).

`PreferenceStep` samples within the policy's ``[preference.budget]``
(`comparators.preference_budget`) and runs the judge on the sample, a live judge's calls
concurrently in a thread pool: it is the replay's enrich hook. `PreferenceStage` is the
worker's: it plans on the event loop (cheap), sends the calls to the pool and waits at most
`wait_s` for them, so a slow judge delays a batch by at most that and never blocks the
loop. A pair whose judgment is not back by then goes out unjudged (`Skip.LATE`, counted);
the judgment, when it comes, lands in the judge's cache.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import orjson
from shadowlens.comparators.pairs import PairScore
from shadowlens.comparators.preference import (
    JudgeItem,
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
    Spend,
    apply_judgments,
    plan_judging,
    tally,
)
from shadowlens.judge.policy import Policy

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
    concurrency: int = 8  # live: calls in flight
    wait_s: float = 5.0  # worker: longest wait for a batch's judgments

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


def _outcome(future: asyncio.Future[JudgeOutcome]) -> JudgeOutcome:
    """A finished call's outcome; a call that raised is an error, not a crash of the batch."""
    return Skip.ERROR if future.exception() is not None else future.result()


class PreferenceStage:
    """The worker's judge step: one batch of pair scores in, the same judged out."""

    def __init__(self, step: PreferenceStep, counts: Counter[str], wait_s: float) -> None:
        self.step = step
        self.counts = counts
        self.wait_s = wait_s

    @classmethod
    def build(
        cls, settings: JudgeSettings, policy: Policy, counts: Counter[str]
    ) -> PreferenceStage | None:
        step = PreferenceStep.build(settings, policy)
        return None if step is None else cls(step, counts, settings.wait_s)

    async def enrich(self, scores: list[PairScore]) -> list[PairScore]:
        plan = self.step.plan(scores)
        items: list[JudgeItem] = plan.items
        outcomes: list[JudgeOutcome] = []
        if items:
            loop = asyncio.get_running_loop()
            calls = [loop.run_in_executor(self.step.pool, self.step.judge, i) for i in items]
            done, _ = await asyncio.wait(calls, timeout=self.wait_s)
            outcomes = [_outcome(c) if c in done else Skip.LATE for c in calls]
        out = self.step.finish(plan, outcomes)
        self.counts.update(tally(out))
        return out
