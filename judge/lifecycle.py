"""The experiment lifecycle as a pure state machine: what the judge's verdicts and the
operators' commands do to a migration (the diagram and a walk-through: docs/operations.md).

    ramping --regression--> rolled_back --resume / retry on fresh passing evidence--> ramping
    ramping --last stage--> stability --stability_ms, evidence passes--> complete
    any --pause--> paused --resume--> ramping;  any --abort--> aborted (0 %, final)
    a step the policy gates (ramp.approval) --> awaiting_approval --approve--> the step

Rules that make every control message mean one thing:

* one rollback per regression: a metric that already holds a rolled-back experiment
  (`Lifecycle.blocking`) failing again is a hold that names it, not another rollback; a
  metric failing for the first time is a new regression and rolls back again;
* the epoch changes only when the routed share does (`shadowlens.judge.ramp.move`);
* a rollback restarts the stage, and so does every judgement in which the regression
  still fails (same share, same epoch): a retry (``ramp.after_rollback = "retry"``) sees
  only evidence gathered since the regression last failed, and needs a pass for every
  metric and segment that failed; a segment without traffic since is no evidence that it
  recovered;
* a gated step is proposed (a hold carrying `Proposal`) and taken only on `approve`.

Pure: event time (`now_ms`) is an argument; commands arrive verified (signature, key,
age: the shell's job) and are checked here against the state (epoch, replay, phase).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

from shadowlens.judge.policy import AfterRollback, RampPolicy
from shadowlens.judge.ramp import RampState, move, target
from shadowlens.judge.verdicts import (
    Action,
    Blocker,
    Command,
    Decision,
    Evidence,
    Operator,
    Phase,
    Proposal,
    Verdict,
)

REMEMBERED_COMMANDS = 32  # ids kept to refuse a replayed command (older ones have expired)


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """Where one experiment's migration stands, beside its ramp stage (`RampState`)."""

    phase: Phase = Phase.RAMPING
    since_ms: int = 0  # event time the phase began
    blocking: tuple[Blocker, ...] = ()  # what failed and holds a rolled-back experiment
    retries: int = 0  # automatic retries since the last operator `resume`
    proposal: Proposal | None = None  # awaiting approval: the step wanted
    stable_since_ms: int | None = None  # when the candidate reached 100 %
    commands: tuple[str, ...] = ()  # ids of the last commands applied

    def decommission_after_ms(self, policy: RampPolicy) -> int | None:
        """At 100 %: when the old deployment may be decommissioned if nothing regresses."""
        if self.stable_since_ms is None:
            return None
        return self.stable_since_ms + policy.stability_ms


@dataclass(frozen=True, slots=True)
class Assessment:
    """What one judgement's verdicts say, for the lifecycle to act on (`decide` builds it)."""

    failing: tuple[Evidence, ...]  # rollback metrics that fail
    failing_reason: str
    waiting: str  # "" when the evidence lets the ramp move on, else why it does not
    pairs: int  # paired requests in the stage so far
    evidence: tuple[Evidence, ...] = ()


@dataclass(frozen=True, slots=True)
class OperatorCommand:
    """A command whose signature, key and age the shell has checked."""

    experiment: str
    command: Command
    epoch: int  # the epoch the operator acted on
    command_id: str
    key_id: str
    reason: str


class Refusal(StrEnum):
    """Why a verified command changes nothing."""

    UNKNOWN_EXPERIMENT = "unknown_experiment"
    STALE_EPOCH = "stale_epoch"
    REPLAYED = "replayed"
    NOT_APPLICABLE = "not_applicable"  # e.g. approve with nothing proposed


class CommandRefused(Exception):
    """A command refused with its reason; the experiment's state is unchanged."""

    def __init__(self, refusal: Refusal, detail: str) -> None:
        super().__init__(f"{refusal}: {detail}")
        self.refusal = refusal
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Step:
    """One move of the lifecycle: the states after it, what routers do, and why."""

    ramp: RampState
    life: Lifecycle
    action: Action
    reason: str
    fresh: bool = False  # the stage (re)starts: what follows is judged on new evidence
    operator: Operator | None = None

    def decision(
        self,
        experiment: str,
        before: RampState,
        policy: RampPolicy,
        now_ms: int,
        evidence: tuple[Evidence, ...] = (),
    ) -> Decision:
        return Decision(
            experiment=experiment,
            epoch=self.ramp.epoch,
            action=self.action,
            from_percent=before.percent(policy),
            to_percent=self.ramp.percent(policy),
            decided_at_ms=now_ms,
            reason=self.reason,
            evidence=evidence,
            phase=self.life.phase,
            blocking=self.life.blocking,
            proposal=self.life.proposal,
            operator=self.operator,
            decommission_after_ms=self.life.decommission_after_ms(policy),
        )


# --------------------------------------------------------------------------- the judge


def judged(
    ramp: RampState, life: Lifecycle, a: Assessment, policy: RampPolicy, now_ms: int
) -> Step:
    """The step the verdicts of one judgement lead to."""
    if life.phase == Phase.ABORTED:
        return Step(ramp, life, Action.HOLD, "aborted by an operator: the candidate serves 0 %")
    if a.failing:
        return _regression(ramp, life, a, policy, now_ms)
    if life.phase == Phase.PAUSED:
        return Step(ramp, life, Action.HOLD, "paused by an operator: no promotion until resume")
    if life.phase == Phase.ROLLED_BACK:
        return _after_rollback(ramp, life, a, policy, now_ms)
    if life.phase == Phase.AWAITING_APPROVAL and life.proposal is not None:
        p = life.proposal
        return Step(ramp, life, Action.HOLD, f"{p.action} to {p.to_percent:g} % waits for approve")
    if ramp.last(policy):
        return _stability(ramp, life, a, policy, now_ms)
    why_not = _not_ready(ramp, a, policy, now_ms)
    if why_not:
        return Step(ramp, life, Action.HOLD, why_not)
    held = ramp.held_ms(now_ms)
    return _promote(
        ramp, life, policy, now_ms, f"stage passed after {held / 1000:.0f} s and {a.pairs} pairs"
    )


def _regression(
    ramp: RampState, life: Lifecycle, a: Assessment, policy: RampPolicy, now_ms: int
) -> Step:
    """A known regression holds; a new one rolls back (or proposes to, when gated)."""
    found = tuple(dict.fromkeys(Blocker(e.metric, e.segment) for e in a.failing))
    blocking = tuple(dict.fromkeys(life.blocking + found))
    known = {b.metric for b in life.blocking}
    if all(b.metric in known for b in found):  # still failing: evidence starts over, so
        held = replace(life, blocking=blocking)  # a retry needs a pass since this failure
        restarted = move(ramp, ramp.stage_index, policy, now_ms)
        reason = f"{_standing(held)}; still failing: {a.failing_reason}"
        return Step(restarted, held, Action.HOLD, reason, fresh=True)
    stage = target(ramp, Action.ROLLBACK, any(e.critical for e in a.failing), policy)
    if stage != ramp.stage_index and policy.approval.gates(promote=False):
        proposal = Proposal(Action.ROLLBACK, stage, policy.stages_percent[stage])
        waiting = replace(
            life,
            phase=Phase.AWAITING_APPROVAL,
            since_ms=now_ms,
            blocking=blocking,
            proposal=proposal,
        )
        reason = f"rollback to {proposal.to_percent:g} % waits for approve: {a.failing_reason}"
        return Step(ramp, waiting, Action.HOLD, reason)
    rolled = _entered(life, Phase.ROLLED_BACK, stage, policy, now_ms)
    return Step(
        move(ramp, stage, policy, now_ms),
        replace(rolled, blocking=blocking),
        Action.ROLLBACK,
        a.failing_reason,
        fresh=True,
    )


def _after_rollback(
    ramp: RampState, life: Lifecycle, a: Assessment, policy: RampPolicy, now_ms: int
) -> Step:
    """Rolled back and nothing fails now: hold for `resume`, or retry when the policy allows
    and fresh evidence shows every blocker passing."""
    standing = _standing(life)
    if policy.after_rollback == AfterRollback.HOLD:
        return Step(ramp, life, Action.HOLD, f"{standing}; waiting for resume")
    if life.retries >= policy.max_retries:
        used = f"{life.retries} of {policy.max_retries} retries used"
        return Step(ramp, life, Action.HOLD, f"{standing}; {used}, waiting for resume")
    waited = now_ms - life.since_ms
    if waited < policy.retry_after_ms:
        left = _duration(policy.retry_after_ms - waited)
        return Step(ramp, life, Action.HOLD, f"{standing}; a retry is possible in {left}")
    unproven = [b for b in life.blocking if not _passes(b, a.evidence)]
    if unproven:
        verdicts = ", ".join(
            f"{b.metric} [{b.segment}] {_verdict(b, a.evidence)}" for b in unproven
        )
        return Step(ramp, life, Action.HOLD, f"{standing}; retry waits for a pass: {verdicts}")
    why_not = _not_ready(ramp, a, policy, now_ms)
    if why_not:
        return Step(ramp, life, Action.HOLD, f"{standing}; retry waits: {why_not}")
    n = life.retries + 1
    retrying = replace(life, phase=Phase.RAMPING, since_ms=now_ms, blocking=(), retries=n)
    reason = f"retry {n} of {policy.max_retries}: {_blockers(life.blocking)} pass again"
    return _promote(ramp, retrying, policy, now_ms, reason)


def _stability(
    ramp: RampState, life: Lifecycle, a: Assessment, policy: RampPolicy, now_ms: int
) -> Step:
    """At 100 %: the old primary is the shadow and the same judge watches for drift until
    the stability period is over; then the old deployment may be decommissioned."""
    since = now_ms if life.stable_since_ms is None else life.stable_since_ms
    if life.phase == Phase.COMPLETE:
        return Step(
            ramp,
            life,
            Action.HOLD,
            "stability period passed: the old deployment may be decommissioned",
        )
    life = replace(life, phase=Phase.STABILITY, stable_since_ms=since)
    after = since + policy.stability_ms
    if now_ms < after:
        watched = _duration(now_ms - since)
        reason = (
            f"stability period: {watched} of {_duration(policy.stability_ms)} at 100 %; "
            f"the old deployment may be decommissioned after {_when(after)} if nothing "
            "regresses"
        )
        return Step(ramp, life, Action.HOLD, reason)
    why_not = a.waiting or _too_few_pairs(a, policy)
    if why_not:
        return Step(
            ramp, life, Action.HOLD, f"stability period over; decommission waits: {why_not}"
        )
    done = replace(life, phase=Phase.COMPLETE, since_ms=now_ms)
    reason = (
        f"stability period passed ({_duration(policy.stability_ms)} at 100 %, no "
        "regression): the old deployment may be decommissioned"
    )
    return Step(ramp, done, Action.HOLD, reason)


# --------------------------------------------------------------------------- operators


def commanded(
    ramp: RampState, life: Lifecycle, cmd: OperatorCommand, policy: RampPolicy, now_ms: int
) -> Step:
    """The step an operator's verified command takes, or CommandRefused."""
    if cmd.command_id in life.commands:
        raise CommandRefused(Refusal.REPLAYED, f"command {cmd.command_id} was applied already")
    if cmd.epoch != ramp.epoch:
        where = f"{ramp.percent(policy):g} %, {life.phase}"
        raise CommandRefused(
            Refusal.STALE_EPOCH,
            f"command for epoch {cmd.epoch}, {cmd.experiment} is at epoch {ramp.epoch} ({where})",
        )
    if life.phase == Phase.ABORTED:
        raise CommandRefused(Refusal.NOT_APPLICABLE, "aborted is final: start a new experiment")
    step = _COMMANDS[cmd.command](ramp, life, policy, now_ms)
    remembered = (*step.life.commands, cmd.command_id)[-REMEMBERED_COMMANDS:]
    operator = Operator(cmd.key_id, cmd.command, cmd.command_id, cmd.reason)
    reason = f"{cmd.command} by {cmd.key_id}: {cmd.reason} ({step.reason})"
    return replace(
        step, life=replace(step.life, commands=remembered), operator=operator, reason=reason
    )


def _resume(ramp: RampState, life: Lifecycle, policy: RampPolicy, now_ms: int) -> Step:
    if life.phase not in (Phase.ROLLED_BACK, Phase.PAUSED):
        raise CommandRefused(Refusal.NOT_APPLICABLE, f"nothing to resume: {life.phase}")
    phase = Phase.STABILITY if ramp.last(policy) else Phase.RAMPING
    resumed = Lifecycle(phase, now_ms, stable_since_ms=life.stable_since_ms, commands=life.commands)
    return Step(ramp, resumed, Action.HOLD, f"{phase} at {ramp.percent(policy):g} %")


def _pause(ramp: RampState, life: Lifecycle, policy: RampPolicy, now_ms: int) -> Step:
    if life.phase == Phase.PAUSED:
        raise CommandRefused(Refusal.NOT_APPLICABLE, "already paused")
    paused = replace(life, phase=Phase.PAUSED, since_ms=now_ms, proposal=None)
    return Step(ramp, paused, Action.HOLD, f"paused at {ramp.percent(policy):g} %")


def _abort(ramp: RampState, life: Lifecycle, policy: RampPolicy, now_ms: int) -> Step:
    aborted = Lifecycle(Phase.ABORTED, now_ms, commands=life.commands)
    moved = move(ramp, 0, policy, now_ms)
    action = Action.ROLLBACK if moved.epoch != ramp.epoch else Action.HOLD
    return Step(moved, aborted, action, "the candidate serves 0 %, for good", fresh=True)


def _approve(ramp: RampState, life: Lifecycle, policy: RampPolicy, now_ms: int) -> Step:
    p = life.proposal
    if life.phase != Phase.AWAITING_APPROVAL or p is None:
        raise CommandRefused(Refusal.NOT_APPLICABLE, f"nothing to approve: {life.phase}")
    phase = Phase.ROLLED_BACK if p.action == Action.ROLLBACK else Phase.RAMPING
    entered = _entered(replace(life, proposal=None), phase, p.stage_index, policy, now_ms)
    moved = move(ramp, p.stage_index, policy, now_ms)
    return Step(moved, entered, p.action, f"{p.action} to {p.to_percent:g} %", fresh=True)


_COMMANDS = {
    Command.RESUME: _resume,
    Command.PAUSE: _pause,
    Command.ABORT: _abort,
    Command.APPROVE: _approve,
}


# --------------------------------------------------------------------------- helpers


def _promote(
    ramp: RampState, life: Lifecycle, policy: RampPolicy, now_ms: int, reason: str
) -> Step:
    """One stage up, or its proposal when promotions wait for approval."""
    stage = ramp.stage_index + 1
    if policy.approval.gates(promote=True):
        proposal = Proposal(Action.PROMOTE, stage, policy.stages_percent[stage])
        waiting = replace(life, phase=Phase.AWAITING_APPROVAL, since_ms=now_ms, proposal=proposal)
        return Step(
            ramp,
            waiting,
            Action.HOLD,
            f"promote to {proposal.to_percent:g} % waits for approve: {reason}",
        )
    entered = _entered(life, Phase.RAMPING, stage, policy, now_ms)
    return Step(move(ramp, stage, policy, now_ms), entered, Action.PROMOTE, reason, fresh=True)


def _entered(
    life: Lifecycle, phase: Phase, stage: int, policy: RampPolicy, now_ms: int
) -> Lifecycle:
    """The lifecycle on entering `stage` in `phase`: the last stage starts the stability
    period (or keeps it, when it never left 100 %), any other stage ends it."""
    last = stage == len(policy.stages_percent) - 1
    if last and phase == Phase.RAMPING:
        phase = Phase.STABILITY
    stable = (life.stable_since_ms or now_ms) if last else None
    return replace(life, phase=phase, since_ms=now_ms, proposal=None, stable_since_ms=stable)


def _not_ready(ramp: RampState, a: Assessment, policy: RampPolicy, now_ms: int) -> str:
    """Why the stage may not move up yet ("" when it may): time, pairs, then evidence."""
    held = ramp.held_ms(now_ms)
    if held < policy.min_hold_ms:
        return f"stage held {held / 1000:.0f} s of {policy.min_hold_ms / 1000:.0f} s"
    return _too_few_pairs(a, policy) or a.waiting


def _too_few_pairs(a: Assessment, policy: RampPolicy) -> str:
    if a.pairs < policy.min_pairs:
        return f"stage has {a.pairs} pairs of {policy.min_pairs} needed"
    return ""


def _passes(b: Blocker, evidence: Sequence[Evidence]) -> bool:
    return _verdict(b, evidence) == Verdict.PASS


def _verdict(b: Blocker, evidence: Sequence[Evidence]) -> Verdict:
    for e in evidence:
        if e.metric == b.metric and e.segment == b.segment:
            return e.verdict
    return Verdict.NODATA


def _blockers(blocking: Sequence[Blocker]) -> str:
    """``latency_p99 [*, support]; error_rate [billing]``: each metric once."""
    segments: dict[str, list[str]] = {}
    for b in blocking:
        segments.setdefault(str(b.metric), []).append(b.segment)
    return "; ".join(f"{metric} [{', '.join(segs)}]" for metric, segs in segments.items())


def _standing(life: Lifecycle) -> str:
    """What holds the experiment, for a hold's reason."""
    if life.phase == Phase.AWAITING_APPROVAL and life.proposal is not None:
        return f"{life.proposal.action} to {life.proposal.to_percent:g} % waits for approve"
    return f"{life.phase.replace('_', ' ')} on {_blockers(life.blocking)}"


def _duration(ms: int) -> str:
    """``45 s``, ``12 min``, ``6.5 h``, ``30 d``."""
    s = ms / 1000
    for unit, size, limit in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 2 * 86400)):
        if s < limit:
            return f"{s / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{s / 86400:.1f}".removesuffix(".0") + " d"


def _when(ms: int) -> str:
    """Event time as UTC, to the minute."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
