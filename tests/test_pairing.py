"""Pairing by request id: order, duplicates, orphans at max_call_ms, long calls, clocks."""

from __future__ import annotations

import random

import pytest
from shadowlens.pipeline.pairing import Drop, Pairer, PairingConfig
from shadowlens.pipeline.progress import Progress
from shadowlens.schemas.events import Event

from tests.builders import event

CFG = PairingConfig(max_call_ms=10_000, max_skew_ms=2_000, lateness_ms=1_000, retention_ms=20_000)


def test_pairs_in_either_order() -> None:
    for first, second in (("primary", "candidate"), ("candidate", "primary")):
        pairer = Pairer({}, CFG)
        assert pairer.add(event(arm=first)).pairs == ()
        (pair,) = pairer.add(event(arm=second)).pairs
        assert (pair[0].arm, pair[1].arm) == ("primary", "candidate")


def test_replica_pairs_with_primary_too() -> None:
    pairer = Pairer({}, CFG)
    pairer.add(event(arm="candidate"))
    pairer.add(event(arm="replica"))
    pairs = pairer.add(event(arm="primary")).pairs
    assert sorted(str(o.arm) for _, o in pairs) == ["candidate", "replica"]


def test_duplicate_never_makes_a_second_pair() -> None:
    pairer = Pairer({}, CFG)
    pairer.add(event(arm="primary"))
    assert len(pairer.add(event(arm="candidate")).pairs) == 1
    again = pairer.add(event(arm="candidate"))
    assert again.pairs == () and again.dropped[0][1] == Drop.DUPLICATE
    assert pairer.add(event(arm="primary")).dropped[0][1] == Drop.DUPLICATE


def test_a_paired_half_keeps_no_body_but_the_primary_waits_for_a_replica() -> None:
    pairer = Pairer({}, CFG)
    pairer.add(event(arm="candidate", text="x" * 10_000))
    pairer.add(event(arm="primary"))
    assert [str(e.arm) for e in pairer.state["r1"].events] == ["primary"]
    assert pairer.add(event(arm="candidate")).dropped[0][1] == Drop.DUPLICATE
    (pair,) = pairer.add(event(arm="replica")).pairs
    assert str(pair[1].arm) == "replica"
    assert pairer.flush().orphans == ()  # the candidate was paired: nothing is missing


@pytest.mark.parametrize(
    ("primary_start", "watermark", "orphaned"),
    [
        (0, 9_999, False),  # a call may still take until start + max_call_ms
        (0, 10_000, True),
        (5_000, 14_999, False),
        (5_000, 15_000, True),
    ],
)
def test_a_missing_half_is_an_orphan_once_the_watermark_passes_start_plus_max_call(
    primary_start: int, watermark: int, orphaned: bool
) -> None:
    pairer = Pairer({}, CFG)
    pairer.add(event("a", start=primary_start, latency=100))
    orphans = pairer.sweep(watermark).orphans
    deadline = primary_start + CFG.max_call_ms
    assert [(o[0].request_id, o[1], o[2]) for o in orphans] == (
        [("a", "candidate", deadline)] if orphaned else []
    )


def test_a_half_after_its_orphan_is_late_not_paired() -> None:
    pairer = Pairer({}, CFG)
    pairer.add(event("a", start=0, latency=100))
    pairer.sweep(10_000)
    late = pairer.add(event("a", arm="candidate", start=0, latency=9_000))
    assert late.dropped[0][1] == Drop.LATE and late.pairs == ()


def test_missing_primary_orphans_each_present_arm_and_replica_is_optional() -> None:
    pairer = Pairer({}, CFG)
    pairer.add(event("a", arm="candidate", start=0))
    pairer.add(event("a", arm="replica", start=0))
    pairer.add(event("b", arm="primary", start=0))
    pairer.add(event("b", arm="candidate", start=0))
    pairer.add(event("c", arm="primary", start=0))
    pairer.add(event("c", arm="replica", start=0))  # replica without candidate: orphan
    orphans = sorted((e.request_id, str(e.arm), m, t) for e, m, t in pairer.flush().orphans)
    assert orphans == [
        ("a", "candidate", "primary", 10_000),
        ("a", "replica", "primary", 10_000),
        ("c", "primary", "candidate", 10_000),
    ]


def test_closed_ids_are_forgotten_after_retention() -> None:
    pairer = Pairer({}, CFG)
    pairer.add(event("a", start=0))
    pairer.sweep(10_000)
    assert pairer.state["a"].closed
    pairer.sweep(29_999)
    assert "a" in pairer.state, "remembered until start + max_call_ms + retention_ms"
    pairer.sweep(30_000)
    assert "a" not in pairer.state


def test_split_mode_is_scored_alone() -> None:
    m = Pairer({}, CFG).add(event(mode="split"))
    assert len(m.singles) == 1 and m.pairs == ()


def run(events: list[Event], cfg: PairingConfig) -> tuple[list, list, list, int]:
    """Feed events in order through the progress check and the pairer, sweeping after each
    one as the replay does: (pairs, orphans, dead letters, drops)."""
    progress: Progress[None] = Progress(cfg)
    pairer = Pairer({}, cfg)
    pairs, orphans, letters, drops = [], [], [], 0
    for e in events:
        admitted = progress.admit(e, None)
        letters += [(r.event.request_id, str(r.reason)) for r in admitted.rejected]
        for accepted, _ in admitted.accepted:
            m = pairer.add(accepted)
            pairs += m.pairs
            drops += len(m.dropped)
        orphans += pairer.sweep(progress.watermark_ms).orphans
    admitted = progress.end()
    letters += [(r.event.request_id, str(r.reason)) for r in admitted.rejected]
    for accepted, _ in admitted.accepted:
        pairs += pairer.add(accepted).pairs
    orphans += pairer.flush().orphans
    return pairs, orphans, letters, drops


def gateways(
    n: int, slow_latency: float, candidate_clock_ms: int, *, every_ms: int = 500
) -> list[Event]:
    """`n` requests every `every_ms` through two gateways: the primary's clock is right, the
    candidate's is `candidate_clock_ms` off. Request "slow" (at 1 s) has a candidate call of
    `slow_latency`; every other call takes 1 s. Events arrive in real completion order."""
    out: list[tuple[int, Event]] = []
    for i in range(n):
        rid, real_start = ("slow" if i == 2 else f"r{i}"), i * every_ms
        latency = slow_latency if rid == "slow" else 1_000.0
        out.append((real_start + 1_000, event(rid, start=real_start, latency=1_000)))
        c_start = real_start + candidate_clock_ms
        out.append(
            (real_start + int(latency), event(rid, "candidate", start=c_start, latency=latency))
        )
    return [e for _, e in sorted(out, key=lambda t: t[0])]


@pytest.mark.parametrize("clock_ms", [-2_000, 0, 2_000])
@pytest.mark.parametrize(
    ("slow_latency", "outcome"),
    [
        (3_000.0, "paired"),
        (9_999.0, "paired"),  # long calls still pair: up to max_call_ms
        (10_000.0, "paired"),
        (10_001.0, "dead letter + orphan"),  # longer than any client waits: call_too_long
    ],
)
def test_halves_pair_for_max_call_ms_whatever_the_clocks(
    slow_latency: float, clock_ms: int, outcome: str
) -> None:
    pairs, orphans, letters, drops = run(gateways(200, slow_latency, clock_ms), CFG)
    paired = {p.request_id for p, _ in pairs}
    assert len(paired) == len(pairs) and drops == 0
    assert {f"r{i}" for i in range(200) if i != 2} <= paired
    if outcome == "paired":
        assert "slow" in paired and orphans == [] and letters == []
        (slow,) = [o for p, o in pairs if p.request_id == "slow"]
        assert slow.latency_ms == slow_latency  # its own latency, whatever its clock says
    else:
        assert [(o[0].request_id, o[1]) for o in orphans] == [("slow", "candidate")]
        assert letters == [("slow", "call_too_long")]


def test_shuffled_stream_with_duplicates_and_drops_gives_exact_counts() -> None:
    rng = random.Random(7)
    events: list[Event] = []
    n, dropped = 2_000, set()
    for i in range(n):
        start = i * 50
        events.append(event(f"r{i}", start=start, latency=rng.uniform(100, 5_000)))
        if rng.random() < 0.02:
            dropped.add(f"r{i}")
        else:
            latency = rng.uniform(100, 10_000)  # some as long as max_call_ms
            events.append(event(f"r{i}", arm="candidate", start=start, latency=latency))
    events += rng.sample(events, 40)  # duplicates
    events.sort(key=lambda e: e.completed_ms + rng.uniform(-500, 500))  # mild disorder
    pairs, orphans, letters, dups = run(events, CFG)
    assert len(pairs) == n - len(dropped)
    assert {o[0].request_id for o in orphans} == dropped
    assert len({p[0].request_id for p in pairs}) == len(pairs)
    assert dups == 40 and letters == []


def test_closed_requests_keep_no_bodies_and_still_spot_duplicates() -> None:
    pairer = Pairer({}, CFG)
    pairer.add(event("a", start=0, text="x" * 10_000))
    pairer.flush()
    assert pairer.state["a"].events == () and pairer.state["a"].seen_arms == ("primary",)
    assert pairer.add(event("a", start=0)).dropped[0][1] == Drop.DUPLICATE
    assert pairer.add(event("a", arm="candidate", start=0)).dropped[0][1] == Drop.LATE


def test_an_experiment_over_max_pending_sheds_its_oldest_as_orphans() -> None:
    cfg = PairingConfig(max_call_ms=10**9, max_pending=100)
    pairer = Pairer({}, cfg)
    shed, orphans = 0, []
    for i in range(150):
        m = pairer.add(event(f"r{i}", start=i))
        pairer.add(event(f"o{i}", start=i, experiment="other"))  # another experiment: untouched
        shed += m.shed
        orphans += m.orphans
    assert shed == len(orphans) > 0
    assert pairer.open_requests["exp"] <= 100 and pairer.open_requests["other"] <= 100
    assert all(o[0].experiment == "exp" or o[0].request_id.startswith("o") for o in orphans)
    assert min(int(o[0].request_id[1:]) for o in orphans if o[0].experiment == "exp") == 0
    # a recovered Pairer (e.g. after a restart from the changelog) recounts what is open
    assert Pairer(pairer.state, cfg).open_requests == pairer.open_requests


def test_shedding_closes_paired_requests_before_it_orphans_a_running_call() -> None:
    pairer = Pairer({}, PairingConfig(max_call_ms=10**9, max_pending=20))
    pairer.add(event("slow", start=0))  # the oldest: its candidate is still running
    for i in range(1, 20):  # 20 open requests: the limit
        pairer.add(event(f"r{i}", start=i))
        pairer.add(event(f"r{i}", "candidate", start=i))  # paired, kept for a replica
    m = pairer.add(event("new", start=100))
    assert m.shed == 2 and m.orphans == ()  # the two oldest paired requests, no orphan
    assert not pairer.state["slow"].closed
    assert pairer.state["r1"].closed and pairer.state["r2"].closed
