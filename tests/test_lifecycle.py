"""The experiment lifecycle (judge/lifecycle.py): value tables of what the judge's verdicts
and the operators' commands do, then the issue's incidents through `decide`."""

from __future__ import annotations

from dataclasses import replace

import pytest
from shadowlens.judge.decide import ExperimentState, decide
from shadowlens.judge.lifecycle import (
    REMEMBERED_COMMANDS,
    Assessment,
    CommandRefused,
    Lifecycle,
    OperatorCommand,
    Refusal,
    commanded,
    judged,
)
from shadowlens.judge.policy import (
    AfterRollback,
    Approval,
    Policy,
    PolicyError,
    RampPolicy,
    parse_policy,
)
from shadowlens.judge.ramp import RampState
from shadowlens.judge.verdicts import (
    Action,
    Blocker,
    Command,
    Evidence,
    Metric,
    Phase,
    Proposal,
    Verdict,
)

from tests.test_decide import window

DAY = 86_400_000
RP = RampPolicy(retry_after_ms=600_000, max_retries=2, stability_ms=DAY)
NOW = 10_000_000
LAT, ERR = Metric.LATENCY_P99, Metric.ERROR_RATE


def ev(metric: Metric, segment: str, verdict: Verdict, critical: bool = False) -> Evidence:
    return Evidence(metric, segment, verdict, None, None, None, 500, critical)


def assess(*failing: Evidence, waiting: str = "", pairs: int = 1_000,
           passing: tuple[Evidence, ...] = ()) -> Assessment:  # fmt: skip
    return Assessment(failing, "why it failed" if failing else "", waiting, pairs,
                      (*failing, *passing))  # fmt: skip


SLOW = ev(LAT, "*", Verdict.FAIL)
SLOW_SUPPORT = ev(LAT, "support", Verdict.FAIL)
ERRORS = ev(ERR, "billing", Verdict.FAIL, critical=True)
HEALTHY = assess(passing=(ev(LAT, "*", Verdict.PASS), ev(ERR, "billing", Verdict.PASS)))
BILLING_QUIET = assess(passing=(ev(LAT, "*", Verdict.PASS), ev(ERR, "*", Verdict.PASS)))
BLOCKED_ERR = (Blocker(ERR, "billing"),)
BLOCKED_LAT = (Blocker(LAT, "*"),)
LONG_AGO = NOW - 10 * RP.retry_after_ms


def ramp(stage: int, epoch: int = 5, started: int = LONG_AGO) -> RampState:
    return RampState(stage_index=stage, stage_started_ms=started, epoch=epoch)


def rolled_back(blocking: tuple[Blocker, ...] = BLOCKED_ERR, **kw: object) -> Lifecycle:
    return replace(Lifecycle(Phase.ROLLED_BACK, LONG_AGO, blocking), **kw)


# (case, ramp, lifecycle, assessment, policy) -> (action, stage, epoch, phase, fresh, words)
JUDGED = [
    ("healthy stage promotes", ramp(2), Lifecycle(), HEALTHY, RP,
     Action.PROMOTE, 3, 6, Phase.RAMPING, True, "stage passed"),
    ("too short a stage holds", ramp(2, started=NOW - 60_000), Lifecycle(), HEALTHY, RP,
     Action.HOLD, 2, 5, Phase.RAMPING, False, "held 60 s of 120 s"),
    ("too few pairs hold", ramp(2), Lifecycle(), assess(pairs=10), RP,
     Action.HOLD, 2, 5, Phase.RAMPING, False, "10 pairs of 200"),
    ("inconclusive evidence holds", ramp(2), Lifecycle(), assess(waiting="waiting for x"), RP,
     Action.HOLD, 2, 5, Phase.RAMPING, False, "waiting for x"),
    ("a regression rolls back one stage", ramp(3), Lifecycle(), assess(SLOW), RP,
     Action.ROLLBACK, 2, 6, Phase.ROLLED_BACK, True, "why it failed"),
    ("a critical one to 0 %", ramp(3), Lifecycle(), assess(ERRORS), RP,
     Action.ROLLBACK, 0, 6, Phase.ROLLED_BACK, True, "why it failed"),
    ("at 0 % a rollback is no new epoch", ramp(0), Lifecycle(), assess(SLOW), RP,
     Action.ROLLBACK, 0, 5, Phase.ROLLED_BACK, True, "why it failed"),
    ("the same regression again holds", ramp(2), rolled_back(BLOCKED_LAT), assess(SLOW_SUPPORT),
     RP, Action.HOLD, 2, 5, Phase.ROLLED_BACK, True, "still failing"),
    ("a new regression rolls back again", ramp(2), rolled_back(BLOCKED_LAT), assess(ERRORS), RP,
     Action.ROLLBACK, 0, 6, Phase.ROLLED_BACK, True, "why it failed"),
    ("rolled back holds for resume", ramp(0), rolled_back(), HEALTHY, RP,
     Action.HOLD, 0, 5, Phase.ROLLED_BACK, False, "waiting for resume"),
    ("retry: not before retry_after_ms", ramp(0), rolled_back(since_ms=NOW - 60_000), HEALTHY,
     replace(RP, after_rollback=AfterRollback.RETRY),
     Action.HOLD, 0, 5, Phase.ROLLED_BACK, False, "a retry is possible in 9 min"),
    ("retry: a segment without traffic is no evidence", ramp(0), rolled_back(), BILLING_QUIET,
     replace(RP, after_rollback=AfterRollback.RETRY),
     Action.HOLD, 0, 5, Phase.ROLLED_BACK, False, "error_rate [billing] nodata"),
    ("retry: on fresh passing evidence", ramp(0), rolled_back(), HEALTHY,
     replace(RP, after_rollback=AfterRollback.RETRY),
     Action.PROMOTE, 1, 6, Phase.RAMPING, True, "retry 1 of 2"),
    ("retry: not beyond max_retries", ramp(0), rolled_back(retries=2), HEALTHY,
     replace(RP, after_rollback=AfterRollback.RETRY),
     Action.HOLD, 0, 5, Phase.ROLLED_BACK, False, "2 of 2 retries used"),
    ("paused holds", ramp(2), Lifecycle(Phase.PAUSED), HEALTHY, RP,
     Action.HOLD, 2, 5, Phase.PAUSED, False, "paused"),
    ("paused still rolls back", ramp(2), Lifecycle(Phase.PAUSED), assess(SLOW), RP,
     Action.ROLLBACK, 1, 6, Phase.ROLLED_BACK, True, "why it failed"),
    ("a gated promotion is proposed", ramp(2), Lifecycle(), HEALTHY,
     replace(RP, approval=Approval.PROMOTIONS),
     Action.HOLD, 2, 5, Phase.AWAITING_APPROVAL, False, "promote to 10 % waits for approve"),
    ("a proposal waits", ramp(2), Lifecycle(Phase.AWAITING_APPROVAL,
                                            proposal=Proposal(Action.PROMOTE, 3, 10.0)),
     HEALTHY, RP, Action.HOLD, 2, 5, Phase.AWAITING_APPROVAL, False, "waits for approve"),
    ("a gated rollback is proposed", ramp(3), Lifecycle(), assess(SLOW),
     replace(RP, approval=Approval.BOTH),
     Action.HOLD, 3, 5, Phase.AWAITING_APPROVAL, False, "rollback to 5 % waits for approve"),
    ("a proposed rollback: failing again holds", ramp(3),
     Lifecycle(Phase.AWAITING_APPROVAL, blocking=BLOCKED_LAT,
               proposal=Proposal(Action.ROLLBACK, 2, 5.0)),
     assess(SLOW), replace(RP, approval=Approval.ROLLBACKS),
     Action.HOLD, 3, 5, Phase.AWAITING_APPROVAL, True, "still failing"),
    ("at 0 % nothing to approve", ramp(0), Lifecycle(), assess(SLOW),
     replace(RP, approval=Approval.ROLLBACKS),
     Action.ROLLBACK, 0, 5, Phase.ROLLED_BACK, True, "why it failed"),
    ("reaching 100 % starts the stability period", ramp(6), Lifecycle(), HEALTHY, RP,
     Action.PROMOTE, 7, 6, Phase.STABILITY, True, "stage passed"),
    ("stability: when the old deployment may go", ramp(7),
     Lifecycle(Phase.STABILITY, stable_since_ms=NOW - 3_600_000), HEALTHY, RP,
     Action.HOLD, 7, 5, Phase.STABILITY, False, "60 min of 24 h at 100 %"),
    ("stability over, but the evidence is not", ramp(7),
     Lifecycle(Phase.STABILITY, stable_since_ms=NOW - DAY), assess(waiting="no pairs"), RP,
     Action.HOLD, 7, 5, Phase.STABILITY, False, "decommission waits: no pairs"),
    ("stability passed: decommission-ready", ramp(7),
     Lifecycle(Phase.STABILITY, stable_since_ms=NOW - DAY), HEALTHY, RP,
     Action.HOLD, 7, 5, Phase.COMPLETE, False, "may be decommissioned"),
    ("drift at 100 % rolls back", ramp(7), Lifecycle(Phase.STABILITY, stable_since_ms=0),
     assess(SLOW), RP, Action.ROLLBACK, 6, 6, Phase.ROLLED_BACK, True, "why it failed"),
    ("aborted stays put", ramp(0), Lifecycle(Phase.ABORTED), assess(ERRORS), RP,
     Action.HOLD, 0, 5, Phase.ABORTED, False, "aborted"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("ramp_state", "life", "a", "policy", "action", "stage", "epoch", "phase", "fresh", "words"),
    [row[1:] for row in JUDGED],
    ids=[row[0] for row in JUDGED],
)
def test_judged(
    ramp_state: RampState, life: Lifecycle, a: Assessment, policy: RampPolicy, action: Action,
    stage: int, epoch: int, phase: Phase, fresh: bool, words: str,
) -> None:  # fmt: skip
    step = judged(ramp_state, life, a, policy, NOW)
    got = (step.action, step.ramp.stage_index, step.ramp.epoch, step.life.phase, step.fresh)
    assert got == (action, stage, epoch, phase, fresh), step.reason
    assert words in step.reason
    assert (step.ramp.epoch != ramp_state.epoch) == (
        step.ramp.percent(policy) != ramp_state.percent(policy)
    )  # the epoch changes exactly when the share does
    if fresh:
        assert step.ramp.stage_started_ms == NOW
    if phase == Phase.ROLLED_BACK:
        assert step.life.blocking, "a rolled-back state names what blocks it"


def test_blockers_accumulate_and_a_retry_clears_them() -> None:
    step = judged(ramp(2), rolled_back(BLOCKED_LAT), assess(SLOW_SUPPORT), RP, NOW)
    assert step.life.blocking == (Blocker(LAT, "*"), Blocker(LAT, "support"))
    assert "latency_p99 [*, support]" in step.reason
    retry = replace(RP, after_rollback=AfterRollback.RETRY)
    step = judged(ramp(0), rolled_back(), HEALTHY, retry, NOW)
    assert (step.life.blocking, step.life.retries) == ((), 1)


def test_the_stability_period_and_the_decision_say_when() -> None:
    step = judged(ramp(6), Lifecycle(), HEALTHY, RP, NOW)
    decision = step.decision("exp", ramp(6), RP, NOW)
    assert decision.decommission_after_ms == NOW + DAY and decision.phase == Phase.STABILITY
    back = judged(step.ramp, step.life, assess(SLOW), RP, NOW + 1)
    assert back.life.stable_since_ms is None and back.life.decommission_after_ms(RP) is None


# ------------------------------------------------------------------------------ commands


def cmd(command: Command, epoch: int = 5, command_id: str = "c0ffee-1") -> OperatorCommand:
    return OperatorCommand("exp", command, epoch, command_id, "alice", "because")


AWAIT_PROMOTE = Lifecycle(Phase.AWAITING_APPROVAL, proposal=Proposal(Action.PROMOTE, 3, 10.0))
AWAIT_ROLLBACK = Lifecycle(
    Phase.AWAITING_APPROVAL, blocking=BLOCKED_LAT, proposal=Proposal(Action.ROLLBACK, 1, 1.0)
)

# (case, ramp, lifecycle, command) -> (action, stage, epoch, phase)
COMMANDED = [
    ("resume a rollback", ramp(0), rolled_back(retries=2), Command.RESUME,
     Action.HOLD, 0, 5, Phase.RAMPING),
    ("resume at 100 % watches stability", ramp(7), Lifecycle(Phase.PAUSED, stable_since_ms=1),
     Command.RESUME, Action.HOLD, 7, 5, Phase.STABILITY),
    ("pause", ramp(3), Lifecycle(), Command.PAUSE, Action.HOLD, 3, 5, Phase.PAUSED),
    ("pause drops a proposal", ramp(2), AWAIT_PROMOTE, Command.PAUSE,
     Action.HOLD, 2, 5, Phase.PAUSED),
    ("abort", ramp(3), Lifecycle(), Command.ABORT, Action.ROLLBACK, 0, 6, Phase.ABORTED),
    ("abort at 0 %", ramp(0), rolled_back(), Command.ABORT, Action.HOLD, 0, 5, Phase.ABORTED),
    ("approve a promotion", ramp(2), AWAIT_PROMOTE, Command.APPROVE,
     Action.PROMOTE, 3, 6, Phase.RAMPING),
    ("approve a rollback", ramp(2), AWAIT_ROLLBACK, Command.APPROVE,
     Action.ROLLBACK, 1, 6, Phase.ROLLED_BACK),
]  # fmt: skip


@pytest.mark.parametrize(
    ("ramp_state", "life", "command", "action", "stage", "epoch", "phase"),
    [row[1:] for row in COMMANDED],
    ids=[row[0] for row in COMMANDED],
)
def test_commanded(
    ramp_state: RampState, life: Lifecycle, command: Command, action: Action, stage: int,
    epoch: int, phase: Phase,
) -> None:  # fmt: skip
    step = commanded(ramp_state, life, cmd(command), RP, NOW)
    got = (step.action, step.ramp.stage_index, step.ramp.epoch, step.life.phase)
    assert got == (action, stage, epoch, phase), step.reason
    assert step.operator is not None and step.operator.key_id == "alice"
    assert step.reason.startswith(f"{command} by alice: because")
    assert step.life.commands == ("c0ffee-1",) and step.life.proposal is None
    decision = step.decision("exp", ramp_state, RP, NOW)
    assert decision.operator == step.operator and decision.evidence == ()
    if command == Command.RESUME:
        assert (step.life.blocking, step.life.retries) == ((), 0)


# (case, ramp, lifecycle, command) -> refusal
REFUSED = [
    ("a stale epoch", ramp(3, epoch=6), Lifecycle(), cmd(Command.PAUSE, epoch=5),
     Refusal.STALE_EPOCH),
    ("an epoch from the future", ramp(3), Lifecycle(), cmd(Command.PAUSE, epoch=9),
     Refusal.STALE_EPOCH),
    ("a replay", ramp(3), Lifecycle(commands=("c0ffee-1",)), cmd(Command.PAUSE),
     Refusal.REPLAYED),
    ("resume while ramping", ramp(3), Lifecycle(), cmd(Command.RESUME), Refusal.NOT_APPLICABLE),
    ("pause twice", ramp(3), Lifecycle(Phase.PAUSED), cmd(Command.PAUSE),
     Refusal.NOT_APPLICABLE),
    ("approve nothing", ramp(3), Lifecycle(), cmd(Command.APPROVE), Refusal.NOT_APPLICABLE),
    ("anything after abort", ramp(0), Lifecycle(Phase.ABORTED), cmd(Command.RESUME),
     Refusal.NOT_APPLICABLE),
]  # fmt: skip


@pytest.mark.parametrize(
    ("ramp_state", "life", "command", "refusal"),
    [row[1:] for row in REFUSED],
    ids=[row[0] for row in REFUSED],
)
def test_refused(
    ramp_state: RampState, life: Lifecycle, command: OperatorCommand, refusal: Refusal
) -> None:
    with pytest.raises(CommandRefused) as info:
        commanded(ramp_state, life, command, RP, NOW)
    assert info.value.refusal == refusal and info.value.detail


def test_command_ids_are_remembered_for_a_while() -> None:
    life = Lifecycle(Phase.PAUSED)
    for i in range(REMEMBERED_COMMANDS + 5):
        command = Command.RESUME if life.phase == Phase.PAUSED else Command.PAUSE
        life = commanded(ramp(3), life, cmd(command, command_id=f"id-{i:04d}"), RP, NOW).life
    assert len(life.commands) == REMEMBERED_COMMANDS and life.commands[-1] == "id-0036"


# ------------------------------------------------------------------------------ policy


def test_the_lifecycle_policy_parses_and_rejects_bad_values() -> None:
    ramp = {"after_rollback": "retry", "approval": "both", "retry_after_ms": 1,
            "max_retries": 3, "stability_ms": 5}  # fmt: skip
    policy = parse_policy({"ramp": ramp})
    r = policy.ramp
    assert (r.after_rollback, r.approval, r.max_retries, r.stability_ms) == (
        AfterRollback.RETRY, Approval.BOTH, 3, 5
    )  # fmt: skip
    assert Policy().ramp.after_rollback == AfterRollback.HOLD
    assert Policy().ramp.stability_ms == 30 * DAY
    with pytest.raises(PolicyError, match='after_rollback must be one of "hold", "retry"'):
        parse_policy({"ramp": {"after_rollback": "again"}})
    with pytest.raises(PolicyError, match="approval"):
        parse_policy({"ramp": {"approval": "yes"}})
    with pytest.raises(PolicyError, match=">= 0"):
        parse_policy({"ramp": {"max_retries": -1}})


# ------------------------------------------------------------------------------ decide


def run(windows: list, state: ExperimentState, policy: Policy, start_ms: int = 0) -> list:
    """Decide window after window, a minute apart; the decisions in order."""
    decisions = []
    for i, batch in enumerate(windows):
        decision, state = decide("exp", batch, state, policy, start_ms + (i + 1) * 60_000)
        decisions.append(decision)
    return decisions


def test_one_rollback_per_regression_and_no_epoch_churn() -> None:
    """The issue's storm: a regression that lasts 15 windows rolled back (and bumped the
    epoch) every minute, 0 % -> 0 % included. Now: one rollback, then holds that name it."""
    state = ExperimentState(RampState(stage_index=2, stage_started_ms=-(10**6), epoch=2))
    slow = [[window(latency_factor=1.6, seed=i)] for i in range(15)]
    decisions = run(slow, state, Policy())
    actions = [d.action for d in decisions]
    assert actions.count(Action.ROLLBACK) == 1 and actions[0] == Action.ROLLBACK
    assert {d.epoch for d in decisions} == {3} and decisions[0].to_percent == 1
    for d in decisions[1:]:
        assert d.action == Action.HOLD and d.phase == Phase.ROLLED_BACK
        assert Blocker(LAT, "*") in d.blocking and "still failing" in d.reason


def test_no_re_promotion_while_the_failed_segment_has_no_traffic() -> None:
    """The issue's second incident: rolled back on one segment's errors, then promoted
    again because that segment had no traffic in the next stage. With `retry`, a retry
    needs that segment to pass again."""
    policy = replace(Policy(), ramp=replace(
        Policy().ramp, after_rollback=AfterRollback.RETRY, retry_after_ms=120_000))  # fmt: skip
    state = ExperimentState(RampState(stage_index=1, stage_started_ms=-(10**6), epoch=1))
    broken = [window(300, segment="billing", error_share=0.3), window(600, segment="chat")]
    quiet = [[window(600, segment="chat", seed=i)] for i in range(1, 9)]
    back = [[window(300, segment="billing", seed=i), window(600, segment="chat", seed=50 + i)]
            for i in range(10, 14)]  # fmt: skip
    decisions = run([broken, *quiet, *back], state, policy)
    first, rest = decisions[0], decisions[1:]
    assert first.action == Action.ROLLBACK and first.to_percent == 0
    assert Blocker(ERR, "billing") in first.blocking
    waiting = rest[: len(quiet)]
    assert all(d.action == Action.HOLD and d.phase == Phase.ROLLED_BACK for d in waiting)
    assert any("error_rate [billing] nodata" in d.reason for d in waiting)
    retried = [d for d in rest if d.action == Action.PROMOTE]
    assert retried and retried[0].reason.startswith("retry 1 of 2")
    assert decisions.index(retried[0]) > len(quiet)  # only once billing passed again
