"""`Scorer.score_each`: the worker scores a batch at once, and a step that cannot be scored
costs only that step (its event is dead-lettered by the caller), not the batch."""

from __future__ import annotations

import pytest
from shadowlens.comparators import pairs
from shadowlens.job import scoring
from shadowlens.job.scoring import Scorer
from shadowlens.judge.policy import load_policy
from shadowlens.pipeline.pairing import Drop, Matched
from shadowlens.schemas.events import Arm, Event

from tests.builders import event


def step(rid: str, text: str = "the answer is 42") -> Matched:
    primary = event(rid, text=text)
    return Matched(
        pairs=((primary, event(rid, Arm.CANDIDATE, text="it is 42")),),
        dropped=((primary, Drop.DUPLICATE),),
    )


def test_a_batch_is_scored_as_step_by_step() -> None:
    steps = [(step(f"r{i}"), f"bytes-{i}") for i in range(3)]
    batch, reference = Scorer(load_policy()), Scorer(load_policy())
    scores, failed = batch.score_each(steps)
    assert failed == []
    assert scores == [s for m, _ in steps for s in reference.score(m)]
    assert batch.counts == reference.counts == {"dropped.duplicate": 3}


def test_a_step_that_fails_costs_only_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    real = pairs.score_pair

    def breaks_on_poison(primary: Event, other: Event, *args: object) -> pairs.PairScore:
        if primary.output.text == "poison":
            raise ValueError("a comparator bug")
        return real(primary, other, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pairs, "score_pair", breaks_on_poison)  # the batch path's
    monkeypatch.setattr(scoring, "score_pair", breaks_on_poison)  # the step path's
    steps = [(step("r0"), "bytes-0"), (step("r1", "poison"), "bytes-1"), (step("r2"), "bytes-2")]
    scorer = Scorer(load_policy())
    scores, failed = scorer.score_each(steps)
    assert [s.request_id for s in scores] == ["r0", "r2"]
    assert [(payload, str(exc)) for payload, exc in failed] == [("bytes-1", "a comparator bug")]
    # the failed batch counted nothing but itself; each step that scored counts once
    assert scorer.counts == {"scoring.batch_failed": 1, "dropped.duplicate": 2}
