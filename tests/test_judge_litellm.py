"""The live preference judge end to end: LiteLLM over HTTP to a real OpenAI-compatible
server on 127.0.0.1 (tests/judge_stub.py) that answers from the recorded AlpacaEval
judgments: both orders, temperature 0, parsed verdicts, cost per judgment, retries,
timeouts, the cache, self-judging refused, and the worker's stage that never waits.

These tests need the optional ``litellm`` extra; they fail (never skip) without it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest
from shadowlens.cli.app import app
from shadowlens.cli.exit_codes import ExitCode
from shadowlens.comparators.aggregate import Later
from shadowlens.comparators.cost import Price
from shadowlens.comparators.pairs import PairScore, score_pair
from shadowlens.comparators.preference import Judged, JudgeItem, RecordedJudgments, Skip
from shadowlens.judge.policy import load_policy
from shadowlens.replay.faults import Faults
from shadowlens.replay.run import TrafficSpec, built_payloads, run_replay
from shadowlens.streams.judge_litellm import MAX_TOKENS, LiteLLMJudge
from shadowlens.streams.later import FollowUps
from shadowlens.streams.preference_stage import (
    JudgeSettings,
    PreferenceStage,
    PreferenceStep,
    load_recorded,
)
from typer.testing import CliRunner

from tests.builders import SHARED_DATA, event
from tests.judge_stub import COMPLETION_TOKENS, PROMPT_TOKENS, JudgeStub

JUDGED = SHARED_DATA / "alpaca_eval_judge"
pytestmark = pytest.mark.skipif(not JUDGED.is_dir(), reason="../shared/data is not present")

MODEL = "openai/judge-stub"  # LiteLLM's route to any OpenAI-compatible endpoint
PRICE = Price(input_per_mtok_usd=1.0, output_per_mtok_usd=4.0)
CALL_USD = (PROMPT_TOKENS * PRICE.input_per_mtok_usd + COMPLETION_TOKENS * 4.0) / 1e6
PRIMARY, CANDIDATE = "gpt4_1106_preview", "gpt-3.5-turbo-1106"
ITEM = JudgeItem("r1", "Capital of France?", "Paris.", "Lyon.", PRIMARY, CANDIDATE)
SMALL = RecordedJudgments.from_annotations(
    [{"output_1": "Paris.", "output_2": "Lyon.", "preference": 1.0}]
)


@pytest.fixture(scope="module")
def recorded() -> RecordedJudgments:
    return load_recorded(JUDGED)


@pytest.fixture
def stub_factory() -> Iterator[type[JudgeStub]]:
    started: list[JudgeStub] = []

    class Started(JudgeStub):
        def start(self) -> str:
            started.append(self)
            return super().start()

    yield Started
    for stub in started:
        stub.stop()


def live(url: str, **kwargs: object) -> LiteLLMJudge:
    options: dict[str, object] = {"prices": {MODEL: PRICE}, "api_base": url, "api_key": "stub"}
    options.update(kwargs)
    return LiteLLMJudge(MODEL, **options)  # type: ignore[arg-type]


def test_a_replay_judged_live_agrees_with_the_recorded_judge(
    recorded: RecordedJudgments, stub_factory: type[JudgeStub]
) -> None:
    stub = stub_factory(recorded)
    url = stub.start()
    policy = replace(load_policy(), prices={MODEL: PRICE})
    settings = JudgeSettings(f"litellm:{MODEL}", api_base=url, api_key="stub", concurrency=8)
    step = PreferenceStep.build(settings, policy)
    assert step is not None
    spec = TrafficSpec(SHARED_DATA, "live", PRIMARY, CANDIDATE, requests=240)
    result = run_replay(built_payloads(spec, Faults()), policy, None, enrich=step)

    judged = [s for s in result.memory.scores if s.preference is not None]
    assert len(judged) > 200
    called = [s for s in judged if not s.exact_match]  # identical answers tie without a call
    for s in judged:
        recorded_win = recorded.win(s.primary_body, s.candidate_body)
        assert recorded_win is not None
        expected = 1.0 if recorded_win > 0.5 else 0.0 if recorded_win < 0.5 else 0.5
        assert s.preference == expected, s.request_id
    assert all(s.judge_cost_usd == pytest.approx(2 * CALL_USD) for s in called)  # no retry
    orders = set(stub.orders)
    assert all(
        (s.primary_body, s.candidate_body) in orders
        and (s.candidate_body, s.primary_body) in orders
        for s in called
    ), "each pair is judged in both orders"
    assert len(stub.requests) == 2 * len(called)
    assert {(r["temperature"], r["max_tokens"]) for r in stub.requests} == {(0, MAX_TOKENS)}
    assert all(r["messages"][0]["role"] == "system" for r in stub.requests)
    assert any("[User request]\n" + "What" in r["messages"][1]["content"] for r in stub.requests)
    win_rate = sum(s.preference or 0 for s in judged) / len(judged)
    assert win_rate < 0.2  # gpt-3.5-turbo-1106 loses to gpt4_1106_preview
    assert step.spend.total_usd == pytest.approx(2 * CALL_USD * len(called))


def test_retries_the_cache_timeouts_and_unreadable_verdicts(
    stub_factory: type[JudgeStub],
) -> None:
    flaky = stub_factory(SMALL, fail_first=2)
    judge = live(flaky.start(), retries=2)
    first = judge(ITEM)
    assert first == Judged(0.0, pytest.approx(2 * CALL_USD))  # the failed attempts cost nothing
    assert len(flaky.requests) == 4 and judge.calls == 4
    assert judge(ITEM) == Judged(0.0) and len(flaky.requests) == 4  # cached: no call, no cost

    unknown = JudgeItem("r2", "", "Paris.", "Marseille.")  # the stub cannot say: no verdict
    assert judge(unknown) == Skip.ERROR and len(flaky.requests) == 4 + 3  # 1 try + 2 retries
    # ... of the first order only: one order alone cannot cancel position bias

    slow = stub_factory(SMALL, delay_s=1.0)
    started = time.perf_counter()
    assert live(slow.start(), timeout_s=0.2, retries=1)(ITEM) == Skip.ERROR
    assert time.perf_counter() - started < 2.5  # two timed-out attempts and one backoff


def test_a_judge_that_serves_an_arm_is_refused_unless_allowed(
    stub_factory: type[JudgeStub],
) -> None:
    stub = stub_factory(SMALL)
    url = stub.start()
    own = JudgeItem("r1", "", "Paris.", "Lyon.", PRIMARY, "judge-stub")
    assert live(url)(own) == Skip.SELF_JUDGE and stub.requests == []
    assert isinstance(live(url, allow_self=True)(own), Judged)

    args = ["replay", "--data-dir", str(SHARED_DATA), "--no-store", "--no-progress"]
    args += ["--primary", PRIMARY, "--candidate", CANDIDATE, "--requests", "20"]
    refused = CliRunner().invoke(app, [*args, "--judge", f"litellm:openai/{CANDIDATE}"])
    assert refused.exit_code == ExitCode.USAGE
    assert "serves one of the compared arms" in refused.output
    bad = CliRunner().invoke(app, [*args, "--judge", "gpt-4"])
    assert bad.exit_code == ExitCode.USAGE and "off, recorded or litellm:MODEL" in bad.output


def test_the_cli_replays_with_a_live_judge(
    recorded: RecordedJudgments, stub_factory: type[JudgeStub]
) -> None:
    args = ["replay", "--data-dir", str(SHARED_DATA), "--no-store", "--no-progress"]
    args += ["--primary", PRIMARY, "--candidate", "claude-2", "--requests", "60"]
    stub = stub_factory(recorded)
    judge = ["--judge", f"litellm:{MODEL}", "--judge-api-base", stub.start()]
    out = CliRunner().invoke(app, [*args, *judge], env={"SHADOWLENS_JUDGE_API_KEY": "stub"})
    assert out.exit_code == 0, out.output
    assert "Preference judge: candidate vs primary" in out.output
    assert len(stub.orders) > 100 and "error" not in out.output


def test_the_worker_stage_never_waits_and_hands_each_judgment_to_its_task(
    stub_factory: type[JudgeStub],
) -> None:
    slow = stub_factory(SMALL, delay_s=0.6)
    step = PreferenceStep(live(slow.start()), load_policy().preference.budget, concurrency=4)
    counts: Counter[str] = Counter()
    later = FollowUps(counts)
    stage = PreferenceStage(step, counts, later, max_pending=1)

    def finished(task: int) -> list[PairScore]:
        runs = later.finished(task)
        assert all(what == Later.JUDGMENT for what, _ in runs)
        return [score for _, rows in runs for score in rows]

    def batch(rid: str) -> list[PairScore]:
        primary = event(rid, start=1_700_000_000_000, text="Paris.")
        return [score_pair(primary, event(rid, "candidate", text="Lyon."), {})]

    started = time.perf_counter()
    (late,) = stage.enrich(batch("a"), task=0)
    (busy,) = stage.enrich(batch("b"), task=1)  # one call in flight already: none for this
    assert time.perf_counter() - started < 0.3  # the stage did not wait for the judge
    assert late.preference is None and late.preference_skip == "late"
    assert busy.preference is None and busy.preference_skip == "busy"
    assert finished(0) == [] and later.waiting(0) and not later.waiting(1)
    deadline = time.monotonic() + 20
    while not (judged := finished(0)) and time.monotonic() < deadline:
        time.sleep(0.05)
    (verdict,) = judged
    assert time.perf_counter() - started >= 2 * 0.6  # both orders, each answered slowly
    assert verdict.judge_cost_usd == pytest.approx(2 * CALL_USD)
    assert verdict == replace(
        late,
        preference=0.0,
        preference_weight=1.0,
        preference_skip=None,
        judge_cost_usd=verdict.judge_cost_usd,
    )
    assert not later.waiting(0) and finished(0) == [] and finished(1) == []
    assert counts == {"preference.late": 1, "preference.busy": 1, "judgments.judged": 1}
    assert step.spend.total_usd == verdict.judge_cost_usd  # paid when it came back
