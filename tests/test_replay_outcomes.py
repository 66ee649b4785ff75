"""Every replay example in README.md does what the README says it does.

The examples are read from the README itself, so an example without a check here fails,
and each is replayed through the whole job (built traffic, faults, pipeline, judge) with
the default policy."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import get_type_hints

import pytest
from shadowlens.cli.traffic_options import TrafficOptions
from shadowlens.judge.policy import load_policy
from shadowlens.judge.verdicts import Action, Decision, Metric
from shadowlens.replay.faults import malformed_payloads
from shadowlens.replay.run import ReplayResult, run_replay

README = Path(__file__).resolve().parents[1] / "README.md"
POLICY = load_policy()
NOT_FAULTS = ("--help", "--data-dir", "--export", "--events")  # data and file examples


def readme_replays() -> list[str]:
    """The arguments of each fault example in the README's replay block."""
    block = README.read_text().split("## Replays and fault injection", 1)[1]
    block = block.split("```bash", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    lines = [ln.strip() for ln in block.splitlines() if ln.startswith(".venv/bin/shadowlens")]
    out = [re.sub(r"^\.venv/bin/shadowlens replay\s*", "", ln) for ln in lines]
    return [" ".join(a.split()) for a in out if not any(f in a for f in NOT_FAULTS)]


def replayed(args: str) -> ReplayResult:
    """The example's traffic, built as the CLI builds it, through the whole job."""
    hints = get_type_hints(TrafficOptions)
    kwargs: dict[str, object] = {}
    words = shlex.split(args)
    while words:
        name = words.pop(0).removeprefix("--").replace("-", "_")
        kind = hints[name]
        if kind is bool:
            kwargs[name] = True
        else:
            value = words.pop(0)
            kwargs[name] = int(value) if kind is int else float(value) if kind is float else value
    assert set(kwargs) <= {f.name for f in fields(TrafficOptions)}
    return run_replay(TrafficOptions(**kwargs).payloads(), POLICY, None)  # type: ignore[arg-type]


def first_rollback(made: list[Decision]) -> Decision:
    return next(d for d in made if d.action == Action.ROLLBACK)


def rolls_back(
    metric: Metric, to_percent: float, after_s: float = 0.0
) -> Callable[[ReplayResult], None]:
    """The first rollback is on `metric`, to `to_percent`, after `after_s` of traffic."""

    def check(result: ReplayResult) -> None:
        made = result.memory.made
        t0 = min(s.event_time_ms for s in result.memory.scores)
        first = first_rollback(made)
        assert {e.metric for e in first.failing if e.segment == "*"} == {metric}, first.reason
        assert first.to_percent == to_percent
        assert first.decided_at_ms > t0 + after_s * 1000
        assert all(e.example_request_ids for e in first.failing)

    return check


def holds_uncertified(result: ReplayResult) -> None:
    made = result.memory.made
    assert {d.action for d in made} == {Action.HOLD} and {d.to_percent for d in made} == {0}
    assert all("quality not certified" in d.reason for d in made[2:])


def walks_to_full(result: ReplayResult) -> None:
    """Every stage passes at its first decision after 2 minutes (the first one, too, once
    every segment has 50 requests), and nothing rolls back."""
    made = result.memory.made
    promotions = [d for d in made if d.action == Action.PROMOTE]
    assert [d.to_percent for d in promotions] == [1, 5, 10, 25, 50, 75, 100]
    assert Action.ROLLBACK not in {d.action for d in made}
    assert all("stage passed after 120 s" in d.reason for d in promotions[1:])


def lost_and_malformed(result: ReplayResult) -> None:
    letters = result.memory.letters
    assert sorted(letter.reason for letter in letters) == sorted(
        r for _, r in malformed_payloads(0)
    )
    assert result.counts["dropped.duplicate"] > 0
    assert result.counts["pairs.candidate_missing"] > 0
    rolls_back(Metric.ERROR_RATE, 0)(result)


def rolls_back_on_quality_in_shadow(result: ReplayResult) -> None:
    first = first_rollback(result.memory.made)
    assert Action.PROMOTE not in {d.action for d in result.memory.made}
    (q,) = [e for e in first.failing if e.segment == "*"]
    assert q.metric == Metric.QUALITY and "replica" in q.reason
    assert q.observed < 0.9 * q.reference


EXPECTED: dict[str, Callable[[ReplayResult], None]] = {
    "": rolls_back_on_quality_in_shadow,
    "--replica-share 0": holds_uncertified,
    "--candidate gpt4_0613 --requests 6000": walks_to_full,
    "--candidate gpt4_0613 --latency-factor 1.5 --latency-after 300": rolls_back(
        Metric.LATENCY_P99, 1, after_s=300
    ),
    "--candidate gpt4_0613 --error-rate 0.3 --error-after 300": rolls_back(
        Metric.ERROR_RATE, 0, after_s=300
    ),
    "--candidate gpt4_0613 --degrade-share 0.7 --degrade-after 300": rolls_back(
        Metric.QUALITY, 5, after_s=300
    ),
    "--candidate gpt4_0613 --drop-candidates 0.1 --duplicates 0.01 --malformed": (
        lost_and_malformed
    ),
}


def test_every_readme_fault_example_has_its_check() -> None:
    assert readme_replays() == list(EXPECTED)


@pytest.mark.parametrize("args", list(EXPECTED))
def test_the_readme_fault_example_does_what_the_readme_says(args: str) -> None:
    EXPECTED[args](replayed(args))
