"""The router side of the control contract: every transition, driven by the judge's decisions
and the lifecycle (rolled back, paused, awaiting approval, aborted, stability)."""

from __future__ import annotations

import jsonschema
import numpy as np
import pytest
from shadowlens.comparators.aggregate import Aggregate
from shadowlens.comparators.pairs import score_pair
from shadowlens.gateway import load_json_schema
from shadowlens.gateway.router import Outcome, RouterState
from shadowlens.judge.decide import ExperimentState, decide
from shadowlens.judge.lifecycle import Lifecycle
from shadowlens.judge.policy import Policy, RampPolicy
from shadowlens.judge.ramp import RampState, move, target
from shadowlens.judge.verdicts import Action, Blocker, Decision, Metric, Phase, Proposal
from shadowlens.pipeline.windows import ClosedWindow, WindowKey
from shadowlens.schemas.events import Status
from shadowlens.streams.control import as_v1, decision_message, heartbeat_message

from tests.builders import event

POLICY = Policy()
RP = POLICY.ramp
LEASE = RP.lease_ms
SCHEMA = load_json_schema("control.v1.json")


def window(
    n: int = 700, *, latency_factor: float = 1.0, error_share: float = 0.0, seed: int = 0
) -> ClosedWindow:
    """One closed window of paired requests with identical text (quality 1.0)."""
    rng = np.random.default_rng(seed)
    agg = Aggregate()
    for i in range(n):
        lat = float(rng.lognormal(7.5, 0.4))
        failed = rng.random() < error_share
        primary = event(f"r{seed}-{i}", start=i, latency=lat, experiment="exp")
        other = event(
            f"r{seed}-{i}", "candidate", start=i, experiment="exp",
            latency=float(lat * rng.lognormal(0, 0.05) * latency_factor),
            text=None if failed else "hello", status=Status.ERROR if failed else Status.OK,
        )  # fmt: skip
        agg.add(score_pair(primary, other, {}))
    return ClosedWindow(WindowKey("exp", "seg", "candidate", 0), 60_000, agg, 0)


def message(decision: Decision, issued_at_ms: int) -> dict:
    msg = decision_message(decision, issued_at_ms, LEASE)
    jsonschema.validate(msg, SCHEMA)  # every message the tests send is a real control.v1
    return msg


def heartbeat(
    epoch: int, percent: float, issued_at_ms: int, life: Lifecycle | None = None, exp: str = "exp"
) -> dict:
    ramp = RampState(stage_index=RP.stages_percent.index(percent), epoch=epoch)
    msg = heartbeat_message(exp, ExperimentState(ramp, lifecycle=life or Lifecycle()), RP,
                            issued_at_ms)  # fmt: skip
    jsonschema.validate(msg, SCHEMA)
    return msg


def judged(stage: int, win: ClosedWindow, *, epoch: int = 10, held_ms: int = 10**6) -> Decision:
    state = ExperimentState(RampState(stage_index=stage, stage_started_ms=-held_ms, epoch=epoch))
    decision, _ = decide("exp", [win], state, POLICY, 0)
    return decision


def router_at(percent: float, epoch: int = 10, lease: int = LEASE) -> RouterState:
    return RouterState("exp", epoch=epoch, traffic_percent=percent, lease_expires_at_ms=lease)


def test_promote_applies_the_next_stage() -> None:
    decision = judged(2, window())
    assert decision.action == Action.PROMOTE and decision.epoch == 11
    state, outcome = router_at(5).apply(message(decision, 1_000), 1_000)
    assert outcome == Outcome.APPLIED
    assert (state.epoch, state.traffic_percent, state.fallback) == (11, 10.0, False)
    assert state.lease_expires_at_ms == 1_000 + LEASE


def test_hold_keeps_the_weights_and_renews_the_lease() -> None:
    decision = judged(2, window(), held_ms=30_000)  # healthy, but held too briefly
    assert decision.action == Action.HOLD and decision.epoch == 10
    state, outcome = router_at(5).apply(message(decision, 20_000), 20_000)
    assert outcome == Outcome.RENEWED
    assert (state.epoch, state.traffic_percent) == (10, 5.0)
    assert state.lease_expires_at_ms == 20_000 + LEASE


def test_latency_rollback_goes_back_one_stage() -> None:
    decision = judged(3, window(latency_factor=1.6))
    assert decision.action == Action.ROLLBACK and not any(e.critical for e in decision.failing)
    state, outcome = router_at(10).apply(message(decision, 1_000), 1_000)
    assert outcome == Outcome.APPLIED and (state.epoch, state.traffic_percent) == (11, 5.0)


def test_critical_error_rollback_goes_to_zero() -> None:
    decision = judged(5, window(2_000, error_share=0.2))
    assert decision.action == Action.ROLLBACK and any(e.critical for e in decision.failing)
    state, outcome = router_at(50).apply(message(decision, 1_000), 1_000)
    assert outcome == Outcome.APPLIED and (state.epoch, state.traffic_percent) == (11, 0.0)


def test_stale_epoch_is_dropped() -> None:
    old = judged(2, window())  # epoch 11: promote 5 -> 10
    current = router_at(25, epoch=12)
    state, outcome = current.apply(message(old, 1_000), 1_000)
    assert outcome == Outcome.STALE and state == current


def test_redelivered_decision_is_a_duplicate_and_changes_nothing() -> None:
    decision = judged(2, window())
    msg = message(decision, 1_000)
    first, outcome = router_at(5).apply(msg, 1_000)
    assert outcome == Outcome.APPLIED
    again, outcome = first.apply(msg, 2_000)
    assert outcome == Outcome.DUPLICATE and again == first


def test_same_epoch_with_another_percent_is_a_conflict() -> None:
    state, outcome = router_at(5).apply(heartbeat(10, 25.0, 1_000), 1_000)
    assert outcome == Outcome.CONFLICT and state == router_at(5)


def test_heartbeat_renews_the_lease_so_tick_does_not_fall_back() -> None:
    state = router_at(10, lease=30_000)
    state, outcome = state.apply(heartbeat(10, 10.0, 25_000), 25_000)
    assert outcome == Outcome.RENEWED and state.lease_expires_at_ms == 55_000
    assert state.tick(40_000) == state and not state.fallback


def test_a_lost_lease_falls_back_to_the_primary_and_a_later_message_recovers() -> None:
    state = router_at(25, lease=30_000)
    assert state.tick(29_999) == state and state.candidate_percent == 25.0
    lost = state.tick(30_000)
    assert lost.fallback and lost.candidate_percent == 0.0  # nobody watches: primary only
    assert (lost.traffic_percent, lost.epoch) == (25.0, 10)  # the judge's share is kept
    assert lost.tick(90_000) == lost
    # the judge is back with a heartbeat of the same epoch: its share again
    back, outcome = lost.apply(heartbeat(10, 25.0, 95_000), 95_000)
    assert outcome == Outcome.RENEWED and not back.fallback and back.candidate_percent == 25.0
    # or with a new decision: applied
    decision = judged(4, window())
    moved, outcome = lost.apply(message(decision, 95_000), 95_000)
    assert outcome == Outcome.APPLIED and not moved.fallback and moved.candidate_percent == 50.0


def test_a_newer_heartbeat_catches_up_a_router_that_missed_a_decision() -> None:
    state, outcome = router_at(5).apply(heartbeat(12, 25.0, 1_000), 1_000)
    assert outcome == Outcome.APPLIED and (state.epoch, state.traffic_percent) == (12, 25.0)


def test_a_message_that_arrives_after_its_lease_is_not_acted_on_unless_it_rolls_back() -> None:
    promote = message(judged(2, window()), 0)  # lease ends at 30 s
    state, outcome = router_at(5).apply(promote, 31_000)
    assert outcome == Outcome.EXPIRED and state == router_at(5)
    rollback = message(judged(3, window(latency_factor=1.6)), 0)
    state, outcome = router_at(10).apply(rollback, 31_000)
    assert outcome == Outcome.APPLIED and state.traffic_percent == 5.0
    assert state.fallback and state.candidate_percent == 0.0  # and no lease: primary only


def test_other_experiments_commands_and_unreadable_messages_are_ignored() -> None:
    mine = router_at(5)
    assert mine.apply(heartbeat(99, 100.0, 1_000, exp="other"), 1_000) == (
        mine,
        Outcome.OTHER_EXPERIMENT,
    )
    good = heartbeat(11, 10.0, 1_000)
    for bad in (
        {**good, "schema_version": 3},
        {**good, "schema_version": True},
        {k: v for k, v in good.items() if k != "epoch"},
        {k: v for k, v in good.items() if k != "phase"},  # version 2 says where it stands
        {**good, "epoch": True},
        {**good, "epoch": "11"},
        {**good, "traffic_percent": 101},
        {**good, "type": "command"},
        {**good, "action": "jump"},
        {**good, "phase": "warp"},
        {**good, "blocking": [{"metric": "error_rate"}]},
        {**good, "proposal": "promote"},
    ):
        assert mine.apply(bad, 1_000) == (mine, Outcome.INVALID)


def test_version_1_messages_of_a_legacy_worker_still_route() -> None:
    v1 = as_v1(message(judged(2, window()), 1_000))
    jsonschema.validate(v1, SCHEMA)
    state, outcome = router_at(5).apply(v1, 1_000)
    assert outcome == Outcome.APPLIED and state.traffic_percent == 10.0
    assert state.status.phase == ""  # version 1 does not say


def test_a_fresh_router_serves_nothing_and_never_falls_back_before_a_message() -> None:
    fresh = RouterState("exp")
    assert fresh.candidate_percent == 0.0 and fresh.tick(10**9) == fresh
    state, outcome = fresh.apply(heartbeat(0, 0.0, 0), 0)
    assert outcome == Outcome.APPLIED and state.epoch == 0


BLOCKED = (Blocker(Metric.ERROR_RATE, "billing"),)


@pytest.mark.parametrize(
    ("life", "phase", "blocking", "proposal", "ready"),
    [
        (Lifecycle(), "ramping", (), "", False),
        (Lifecycle(Phase.ROLLED_BACK, blocking=BLOCKED), "rolled_back",
         ("error_rate [billing]",), "", False),
        (Lifecycle(Phase.PAUSED), "paused", (), "", False),
        (Lifecycle(Phase.AWAITING_APPROVAL, proposal=Proposal(Action.PROMOTE, 3, 10.0)),
         "awaiting_approval", (), "promote to 10 %", False),
        (Lifecycle(Phase.STABILITY, stable_since_ms=0), "stability", (), "", False),
        (Lifecycle(Phase.COMPLETE, stable_since_ms=0), "complete", (), "", True),
    ],
)  # fmt: skip
def test_the_lifecycle_is_shown_and_never_moves_traffic(
    life: Lifecycle, phase: str, blocking: tuple[str, ...], proposal: str, ready: bool
) -> None:
    state, outcome = router_at(5).apply(heartbeat(10, 5.0, 1_000, life), 1_000)
    assert outcome == Outcome.RENEWED and state.candidate_percent == 5.0
    s = state.status
    assert (s.phase, s.blocking, s.proposal, s.decommission_ready) == (
        phase, blocking, proposal, ready
    )  # fmt: skip


def test_an_older_message_of_the_same_epoch_does_not_overwrite_the_status() -> None:
    paused = heartbeat(10, 5.0, 2_000, Lifecycle(Phase.PAUSED))
    resumed = heartbeat(10, 5.0, 3_000)
    state, _ = router_at(5).apply(resumed, 3_000)
    state, outcome = state.apply(paused, 3_500)  # redelivered late
    assert outcome == Outcome.RENEWED and state.status.phase == "ramping"


@pytest.mark.parametrize("critical", [False, True])
def test_ramp_up_and_down_through_every_stage_drives_the_router(critical: bool) -> None:
    rp = RampPolicy()
    stages = rp.stages_percent
    ramp, router, now = RampState(), RouterState("exp"), 0

    def step(action: Action, crit: bool = False) -> None:
        nonlocal ramp, router, now
        now += 60_000
        before = ramp
        ramp = move(ramp, target(ramp, action, crit, rp), rp, now)
        decision = Decision(
            "exp", ramp.epoch, action, before.percent(rp), ramp.percent(rp), now, "test"
        )
        if ramp.epoch > router.epoch:
            expected = Outcome.APPLIED
        else:
            expected = Outcome.RENEWED if action == Action.HOLD else Outcome.DUPLICATE
        router, outcome = router.apply(message(decision, now), now)
        assert outcome == expected
        assert router.traffic_percent == ramp.percent(rp) and router.epoch == ramp.epoch

    step(Action.HOLD)  # the shadow stage, epoch 0
    for i, percent in enumerate(stages[1:], start=1):
        step(Action.PROMOTE)
        assert (ramp.stage_index, ramp.epoch, router.traffic_percent) == (i, i, percent)
        assert ramp.stage_started_ms == now
    step(Action.PROMOTE)  # at 100 % a promote changes nothing: same epoch, a duplicate
    assert ramp.epoch == len(stages) - 1
    if critical:
        step(Action.ROLLBACK, crit=True)
        assert router.traffic_percent == 0 and ramp.stage_index == 0
    else:
        for i in range(len(stages) - 2, -1, -1):
            step(Action.ROLLBACK)
            assert ramp.stage_index == i and router.traffic_percent == stages[i]
    epoch = ramp.epoch
    step(Action.ROLLBACK)  # from 0 % to 0 %: no new epoch, a duplicate for the router
    assert ramp.stage_index == 0 and ramp.epoch == epoch and router.traffic_percent == 0
