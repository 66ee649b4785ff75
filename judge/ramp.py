"""The traffic ramp as a pure state machine: shadow (0 %) -> 1 -> 5 -> ... -> 100 %.

Every transition bumps the epoch, so a router can drop any control message older than the
last one it applied.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shadowlens.judge.policy import RampPolicy
from shadowlens.judge.verdicts import Action


@dataclass(frozen=True, slots=True)
class RampState:
    stage_index: int = 0
    stage_started_ms: int = 0
    epoch: int = 0

    def percent(self, policy: RampPolicy) -> float:
        return policy.stages_percent[self.stage_index]

    def held_ms(self, now_ms: int) -> int:
        return now_ms - self.stage_started_ms


def transition(state: RampState, action: Action, critical: bool, policy: RampPolicy,
               now_ms: int) -> RampState:  # fmt: skip
    """The next state: promote one stage, roll back one stage (critical: to 0 %), or stay."""
    last = len(policy.stages_percent) - 1
    if action == Action.PROMOTE and state.stage_index < last:
        target = state.stage_index + 1
    elif action == Action.ROLLBACK:
        target = 0 if critical else max(0, state.stage_index - 1)
    else:
        return state
    return replace(state, stage_index=target, stage_started_ms=now_ms, epoch=state.epoch + 1)
