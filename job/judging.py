"""Judging: closed windows, grouped per experiment and end time, become decisions; so do
operators' commands.

One object holds the experiments' judge state (any mutable mapping: a dict in the replay,
a changelogged task table in the worker) and hands windows and decisions to a sink. It
judges with the judge's own classifiers unless given others (benchmark prototypes).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from itertools import groupby

from shadowlens.job.sinks import Sink
from shadowlens.judge.classifiers import CLASSIFIERS, Classifiers
from shadowlens.judge.decide import ExperimentState, decide
from shadowlens.judge.lifecycle import CommandRefused, OperatorCommand, Refusal, commanded
from shadowlens.judge.policy import Policy
from shadowlens.judge.ramp import RampState
from shadowlens.judge.verdicts import Decision
from shadowlens.pipeline.windows import ClosedWindow


class Judging:
    """Writes closed windows and decides each experiment's step at their end."""

    def __init__(
        self,
        policy: Policy,
        sink: Sink,
        experiments: MutableMapping[str, ExperimentState] | None = None,
        classifiers: Classifiers = CLASSIFIERS,
    ) -> None:
        self.policy = policy
        self.sink = sink
        self.classifiers = classifiers
        self.experiments: MutableMapping[str, ExperimentState] = (
            {} if experiments is None else experiments
        )

    def judge(self, closed: list[ClosedWindow]) -> None:
        if not closed:
            return
        self.sink.windows(closed)
        by_time = sorted(closed, key=lambda w: (w.key.experiment, w.end_ms))
        decisions = []
        for (experiment, end_ms), group in groupby(
            by_time, key=lambda w: (w.key.experiment, w.end_ms)
        ):
            windows = list(group)
            state = self.experiments.get(experiment) or ExperimentState(
                ramp=RampState(stage_started_ms=windows[0].key.start_ms)
            )
            decision, self.experiments[experiment] = decide(
                experiment, windows, state, self.policy, end_ms, self.classifiers
            )
            decisions.append(decision)
        self.sink.decisions(decisions)

    def command(self, cmd: OperatorCommand, now_ms: int) -> Decision:
        """Apply a verified operator command at event time `now_ms` and record its decision;
        CommandRefused (and nothing changed) when it cannot be applied."""
        state = self.experiments.get(cmd.experiment)
        if state is None:
            raise CommandRefused(
                Refusal.UNKNOWN_EXPERIMENT, f"no experiment {cmd.experiment!r} is judged here"
            )
        ramp_policy = self.policy.ramp
        step = commanded(state.ramp, state.lifecycle, cmd, ramp_policy, now_ms)
        decision = step.decision(cmd.experiment, state.ramp, ramp_policy, now_ms)
        self.experiments[cmd.experiment] = state.after(step)
        self.sink.decisions([decision])
        return decision
