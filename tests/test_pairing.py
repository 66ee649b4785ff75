"""Pairing by request id with an event-time watermark: order, duplicates, orphans, lateness."""

from __future__ import annotations

import random

from shadowlens.pipeline.pairing import Drop, Pairer, PairingConfig
from shadowlens.schemas.events import Event

from tests.builders import event

CFG = PairingConfig(timeout_ms=10_000, lateness_ms=1_000, retention_ms=20_000)


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


def test_orphan_after_timeout_counts_missing_arm() -> None:
    pairer = Pairer({}, CFG)
    pairer.add(event("a", start=0, latency=100))
    assert pairer.sweep().orphans == ()  # watermark not past the deadline yet
    pairer.add(event("b", start=20_000, latency=100))  # watermark = 20_100 - 1_000
    (orphan,) = pairer.sweep().orphans
    assert orphan[0].request_id == "a" and orphan[1] == "candidate"
    # the late candidate is recognised, not paired, not silently lost
    late = pairer.add(event("a", arm="candidate", start=0, latency=30_000))
    assert late.dropped[0][1] == Drop.LATE and late.pairs == ()


def test_missing_primary_orphans_each_present_arm_and_replica_is_optional() -> None:
    pairer = Pairer({}, CFG)
    pairer.add(event("a", arm="candidate", start=0))
    pairer.add(event("a", arm="replica", start=0))
    pairer.add(event("b", arm="primary", start=0))
    pairer.add(event("b", arm="candidate", start=0))
    pairer.add(event("c", arm="primary", start=0))
    pairer.add(event("c", arm="replica", start=0))  # replica without candidate: orphan
    orphans = sorted((e.request_id, str(e.arm), m) for e, m in pairer.flush().orphans)
    assert orphans == [
        ("a", "candidate", "primary"),
        ("a", "replica", "primary"),
        ("c", "primary", "candidate"),
    ]


def test_closed_ids_are_forgotten_after_retention() -> None:
    pairer = Pairer({}, CFG)
    pairer.add(event("a", start=0))
    pairer.add(event("z", start=15_000, latency=100))
    pairer.sweep()
    assert pairer.state["a"].closed
    pairer.add(event("y", start=60_000, latency=100))
    pairer.sweep()
    assert "a" not in pairer.state


def test_split_mode_is_scored_alone() -> None:
    m = Pairer({}, CFG).add(event(mode="split"))
    assert len(m.singles) == 1 and m.pairs == ()


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
            events.append(
                event(f"r{i}", arm="candidate", start=start, latency=rng.uniform(100, 8_000))
            )
    events += rng.sample(events, 40)  # duplicates
    events.sort(key=lambda e: e.completed_ms + rng.uniform(-500, 500))  # mild disorder
    pairer = Pairer({}, CFG)
    pairs, orphans, dups = [], [], 0
    for e in events:
        m = pairer.add(e)
        pairs += m.pairs
        dups += len(m.dropped)
        orphans += pairer.sweep().orphans
    orphans += pairer.flush().orphans
    assert len(pairs) == n - len(dropped)
    assert {o[0].request_id for o in orphans} == dropped
    assert len({p[0].request_id for p in pairs}) == len(pairs)
    assert dups == 40


def test_closed_requests_keep_no_bodies_and_still_spot_duplicates() -> None:
    pairer = Pairer({}, CFG)
    pairer.add(event("a", start=0, text="x" * 10_000))
    pairer.flush()
    assert pairer.state["a"].events == () and pairer.state["a"].seen_arms == ("primary",)
    assert pairer.add(event("a", start=0)).dropped[0][1] == Drop.DUPLICATE
    assert pairer.add(event("a", arm="candidate", start=0)).dropped[0][1] == Drop.LATE


def test_an_experiment_over_max_pending_sheds_its_oldest_as_orphans() -> None:
    cfg = PairingConfig(timeout_ms=10**9, max_pending=100)
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
