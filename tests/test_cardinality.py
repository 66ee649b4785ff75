"""policy.limits: client-chosen experiment and segment names cannot grow the windows, the
judge or the pairing table without bound, and what overflows is counted, never lost."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from shadowlens.comparators.pairs import PairScore, score_pair
from shadowlens.judge.policy import (
    JudgePolicy,
    LimitsPolicy,
    PolicyError,
    load_policy,
    parse_policy,
)
from shadowlens.pipeline.cardinality import OTHER_SEGMENT, Cardinality, Overflow
from shadowlens.pipeline.pairing import Pairer
from shadowlens.replay.run import run_replay
from shadowlens.report.html import render
from shadowlens.report.model import load
from shadowlens.report.rows import LimitsRow
from shadowlens.schemas.events import Arm
from shadowlens.store.client import Store

from tests.builders import event

T0 = 1_700_000_000_000


def scored(rid: str, experiment: str, segment: str) -> PairScore:
    kw = {"experiment": experiment, "segment": segment}
    return score_pair(event(rid, **kw), event(rid, Arm.CANDIDATE, **kw), {})


def test_segments_beyond_the_limit_are_windowed_as_other_and_counted() -> None:
    card = Cardinality(max_experiments=4, max_segments=2)
    scores = [scored(f"r{i}", "exp", f"s{i % 5}") for i in range(10)]
    placed, overflowed = card.place(scores)
    assert [s.segment for s in placed] == ["s0", "s1", *[OTHER_SEGMENT] * 3] * 2
    assert [s.request_id for s in placed] == [s.request_id for s in scores], "none dropped"
    assert overflowed == Counter({(Overflow.SEGMENT, "exp"): 6})
    assert card.state == {"exp": ("s0", "s1")}, "overflowing names are not remembered"
    again, _ = card.place([scored("r99", "exp", "s1")])
    assert again[0].segment == "s1", "an admitted segment keeps its own windows"


def test_experiments_beyond_the_limit_are_counted_not_windowed_nor_remembered() -> None:
    card = Cardinality(max_experiments=2, max_segments=8)
    scores = [scored(f"r{i}", f"exp{i}", "seg") for i in range(50)]
    placed, overflowed = card.place(scores)
    assert [s.experiment for s in placed] == ["exp0", "exp1"]
    assert overflowed == Counter({(Overflow.EXPERIMENT, ""): 48})
    assert set(card.state) == {"exp0", "exp1"}
    assert card.changed
    card.changed = False
    card.place([scored("x", "exp1", "seg"), scored("y", "exp7", "seg")])
    assert not card.changed, "no name was admitted"


def test_a_restored_state_keeps_the_admitted_names() -> None:
    first = Cardinality(max_experiments=1, max_segments=1)
    first.place([scored("a", "exp", "s0"), scored("b", "other-exp", "s0")])
    restored = Cardinality(1, 1, dict(first.state))
    placed, overflowed = restored.place([scored("c", "exp", "s1"), scored("d", "exp", "s0")])
    assert [s.segment for s in placed] == [OTHER_SEGMENT, "s0"]
    assert overflowed == Counter({(Overflow.SEGMENT, "exp"): 1})


def test_the_replay_judges_within_the_limits_and_the_report_says_so(tmp_path: Path) -> None:
    """A client that puts the request id into `segment`, and a flood of experiment names:
    the windows hold at most `max_segments` + (other) per experiment and `max_experiments`
    experiments, every pair is still written, and the overflow is counted and reported."""
    base = load_policy()
    policy = replace(
        base,
        limits=LimitsPolicy(max_experiments=3, max_segments=8),
        judge=replace(base.judge, max_segments=4),
    )
    events = []
    for i in range(600):
        start = T0 + i * 1_000
        experiment = "main" if i % 2 else f"flood-{i}"
        segment = f"req-{i}" if i % 2 else "seg"
        kw = {"experiment": experiment, "segment": segment, "start": start}
        events += [event(f"r{i}", **kw), event(f"r{i}", Arm.CANDIDATE, **kw)]
    with Store.open(f"chdb://{tmp_path}/ch") as store:
        store.migrate()
        result = run_replay([(e.to_json(), "") for e in events], policy, store)
        main, flood = load(store, "main", policy), load(store, "flood-598", policy)
    sink = result.memory
    assert len(sink.scores) == 600, "every pair is written"
    windowed = {(w.key.experiment, w.key.segment) for w in sink.closed}
    assert {e for e, _ in windowed} == {"main", "flood-0", "flood-2"}
    main_segments = {s for e, s in windowed if e == "main"}
    assert len(main_segments) == 9 and OTHER_SEGMENT in main_segments
    main_requests = sum(
        w.aggregate.n_requests
        for w in sink.closed
        if w.key.experiment == "main" and w.key.comparison == "candidate"
    )
    assert main_requests == 300, "the overflowing segments still count in the experiment"
    assert result.counts["overflow.segment"] == 300 - 8
    assert result.counts["overflow.experiment"] == 300 - 2
    assert {d.experiment for d in sink.made} == {"main", "flood-0", "flood-2"}

    assert main.limits == LimitsRow(other_pairs=292, other_segments=292, windowed_segments=9)
    assert "292 pairs in 292 segments" in render(main)
    assert main.overview.requests == 300
    assert flood.limits.windowed_segments == 0 and flood.overview.requests == 1
    assert 'id="unjudged"' in render(flood) and 'id="unjudged"' not in render(main)


def test_the_pairing_table_forgets_experiments_with_no_open_request() -> None:
    pairer = Pairer({})
    for i in range(100):
        kw = {"experiment": f"exp-{i}", "start": T0 + i}
        pairer.add(event(f"r{i}", **kw))
    pairer.sweep(T0 + 10**9)
    assert not pairer.open_requests, "closed experiments leave no name behind"


def test_the_judge_cannot_split_over_more_segments_than_the_windows_keep() -> None:
    doc = {"judge": {"max_segments": 10}, "limits": {"max_segments": 8}}
    exceeds = r"judge\.max_segments \(10\) exceeds limits\.max_segments"
    with pytest.raises(PolicyError, match=exceeds):
        parse_policy(doc)
    with pytest.raises(PolicyError, match="must be >= 1"):
        parse_policy({"limits": {"max_experiments": 0}})
    assert parse_policy({"limits": {"max_segments": 8}}).judge == JudgePolicy()
