"""The traffic ramp as a pure state machine: shadow (0 %) -> 1 -> 5 -> ... -> 100 %.

The epoch changes exactly when the routed share does, so a router can drop any control
message older than the last one it applied, and a hold or a rollback that leaves the share
where it is (0 % -> 0 %) is no new epoch: routers and pagers see one change, not a storm.
Which step to take, and when, is the lifecycle's (`shadowlens.judge.lifecycle`).
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

    def last(self, policy: RampPolicy) -> bool:
        return self.stage_index == len(policy.stages_percent) - 1


def target(state: RampState, action: Action, critical: bool, policy: RampPolicy) -> int:
    """The stage a step leads to: one up, one down (critical: to 0 %), or where it is."""
    if action == Action.PROMOTE:
        return min(state.stage_index + 1, len(policy.stages_percent) - 1)
    if action == Action.ROLLBACK:
        return 0 if critical else max(0, state.stage_index - 1)
    return state.stage_index


def move(state: RampState, stage_index: int, policy: RampPolicy, now_ms: int) -> RampState:
    """Enter `stage_index` now (a stage restarts even when it is the same one, so what
    follows is judged on fresh evidence); a new epoch only if the share changes."""
    changed = policy.stages_percent[stage_index] != state.percent(policy)
    epoch = state.epoch + 1 if changed else state.epoch
    return replace(state, stage_index=stage_index, stage_started_ms=now_ms, epoch=epoch)
