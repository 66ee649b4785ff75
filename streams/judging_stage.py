"""The judging agent: windows and decisions per experiment, and the single sink.

Input: ``shadow.pairs`` (keyed by experiment), which carries scored pairs and the
watermarks every pairing task publishes. Per pairs partition (a task):

* pairs go into event-time tumbling windows (`shadowlens.pipeline.windows.TumblingWindows`, state in
  a changelogged table) and to ClickHouse; windows and the judge take the experiments and
  segments within ``policy.limits`` (`shadowlens.pipeline.cardinality`: the admitted names
  are part of the task's state, the overflow is counted);
* a ``judgment`` or ``semantic`` record (a pair's preference judgment or semantic score,
  which the pairing side sends after the pair: `shadowlens.streams.later`) adds only that
  score to the windows, and replaces the pair's row in ClickHouse;
* the task's watermark is the *minimum* over the pairing tasks' latest watermarks, known
  only once every one of them has reported; windows close on it, never on the wall clock;
* closed windows are judged (`judge.decide.decide`, through `job.judging.Judging`
  judge so the worker and `shadowlens replay` decide alike); decisions go to
  ``shadow.control`` keyed by experiment (`shadowlens.streams.control`) and to ClickHouse;
* a timer sends a heartbeat with the lease and the lifecycle (phase, what blocks a
  rolled-back experiment, a proposal waiting for approval) for every experiment, every
  ``policy.ramp.heartbeat_ms``;
* operator commands (``shadow.commands``, co-partitioned with ``shadow.pairs``) are checked
  (schema, an allowlisted operator key, age) and applied by the task that judges their
  experiment at its event time (`shadowlens.job.judging.Judging.command`); the decision
  they make goes out like the judge's, with who and why. A refused command changes nothing
  and is dead-lettered (``command_refused``) with the reason.

Every control message is signed (`shadowlens.streams.control.control_signer`): the worker
does not start without a key unless told ``--allow-unsigned``. Heartbeats and decisions go
out at once, in a transaction of their own (`_send_control`, point 8 of
`shadowlens.streams.transactions`): a slow store or a long batch never holds them.

The owner of the pairs partitions is the worker's only ClickHouse writer (chdb allows one
process per data directory), and also stores the dead letters (``shadow.deadletter`` has
as many partitions as ``shadow.pairs``, so Faust assigns both to the same worker).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from faust.types import TP
from shadowlens.comparators.aggregate import Later
from shadowlens.comparators.pairs import PairScore
from shadowlens.job.judging import Judging
from shadowlens.job.redaction import redact_letter
from shadowlens.job.sinks import Sink
from shadowlens.judge.decide import ExperimentState
from shadowlens.judge.lifecycle import CommandRefused
from shadowlens.judge.policy import Policy
from shadowlens.judge.verdicts import Decision
from shadowlens.pipeline.cardinality import Cardinality, Overflow, Overflowed
from shadowlens.pipeline.windows import ClosedWindow, TumblingWindows, WindowKey, WindowState
from shadowlens.schemas.events import DeadLetter
from shadowlens.streams import control
from shadowlens.streams.ch_writer import Backoff, ClickHouseWriter
from shadowlens.streams.codec import decode_state, encode_state
from shadowlens.streams.config import Settings
from shadowlens.streams.metrics import Metrics, MetricsSink
from shadowlens.streams.task_state import (
    Positions,
    Record,
    TaskState,
    changelog,
    changelog_record,
    current_task,
    in_task,
    produce,
    task_table,
)
from shadowlens.streams.wire import (
    END_MS,
    LATER,
    PAIRS,
    WATERMARK,
    Watermark,
    dead_letter_record,
    decode_pairs,
    read_dead_letter,
    record_type,
)

if TYPE_CHECKING:
    from shadowlens.streams.transactions import ShadowApp

log = logging.getLogger(__name__)

_SEP = "\x1f"
COMMAND_REFUSED = "command_refused"  # the dead-letter reason of a refused command
_LATER_COUNTS = {Later.JUDGMENT: "judgments", Later.SEMANTIC: "semantic_scores"}  # stats


def window_key_str(key: WindowKey) -> str:
    return _SEP.join((key.experiment, key.segment, key.comparison, str(key.start_ms)))


def str_window_key(text: str) -> WindowKey:
    experiment, segment, comparison, start = text.split(_SEP)
    return WindowKey(experiment, segment, comparison, int(start))


class Outputs:
    """The `shadowlens.job.sinks.Sink` the judge writes to: ClickHouse, Prometheus metrics when
    enabled, and control messages collected to be produced by the task that made them."""

    def __init__(self, writer: ClickHouseWriter, metrics: MetricsSink | None = None) -> None:
        self.writer = writer
        self.metrics = metrics
        self.sinks: list[Sink] = [writer] if metrics is None else [writer, metrics]
        self.decided: list[Decision] = []

    def pairs(self, scores: Sequence[PairScore]) -> None:
        for sink in self.sinks:
            sink.pairs(scores)

    def later(self, scores: Sequence[PairScore], what: Later) -> None:
        """Pairs that went out before their score of kind `what`, with it: the row to
        ClickHouse, the score to the metrics (the pair itself was counted already)."""
        self.writer.later(scores)
        if self.metrics is not None:
            self.metrics.later(scores, what)

    def windows(self, windows: Sequence[ClosedWindow]) -> None:
        for sink in self.sinks:
            sink.windows(windows)

    def decisions(self, decisions: Sequence[Decision]) -> None:
        for sink in self.sinks:
            sink.decisions(decisions)
        self.decided.extend(decisions)

    def dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        for sink in self.sinks:
            sink.dead_letters(letters)


class JudgingTask:
    """One pairs partition: its windows, its experiments' judge state, its watermarks."""

    def __init__(self, stage: JudgingStage, partition: int) -> None:
        policy = stage.policy
        self.partition = partition
        self.tp = TP(stage.settings.topic_pairs, partition)
        self.windows_state: TaskState[WindowKey, WindowState] = TaskState(
            stage.windows_table,
            partition,
            encode_state,
            decode_state,
            key_str=window_key_str,
            str_key=str_window_key,
        )
        self.experiments: TaskState[str, ExperimentState] = TaskState(
            stage.experiments_table, partition, encode_state, decode_state
        )
        self.meta: TaskState[str, Any] = TaskState(
            stage.meta_table, partition, orjson.dumps, orjson.loads
        )
        self.windows = TumblingWindows(
            policy.windows.size_ms, policy.windows.grace_ms, state=self.windows_state
        )
        self.windows.closed_before_ms = int(self.meta.get("closed_before", 0))
        admitted = self.meta.get("cardinality") or {}
        self.cardinality = Cardinality(
            policy.limits.max_experiments,
            policy.limits.max_segments,
            {experiment: tuple(segments) for experiment, segments in admitted.items()},
        )
        self.judging = Judging(policy, stage.outputs, self.experiments)
        self.upstream: dict[int, int] = {
            int(k.split("/", 1)[1]): int(v) for k, v in self.meta.items() if k.startswith("wm/")
        }
        self.upstream_partitions = int(self.meta.get("n", 0))
        self.applied_ms = int(self.meta.get("applied", 0))

    def placement_ms(self) -> int:
        """Where a late pair goes: the open window at the watermark (`TumblingWindows.add`)."""
        if self.applied_ms == END_MS:
            return self.windows.closed_before_ms
        return self.applied_ms

    def watermark_ms(self) -> int | None:
        """Minimum over the pairing tasks' watermarks; None until all have reported."""
        n = self.upstream_partitions
        if not n or any(p not in self.upstream for p in range(n)):
            return None
        return min(self.upstream[p] for p in range(n))

    def observe(self, mark: Watermark) -> list[ClosedWindow]:
        self.upstream[mark.partition] = mark.watermark_ms
        self.upstream_partitions = mark.partitions
        self.meta[f"wm/{mark.partition}"] = mark.watermark_ms
        self.meta["n"] = mark.partitions
        wm = self.watermark_ms()
        if wm is None or wm == self.applied_ms:
            return []
        if wm == END_MS:  # every pairing task has flushed: close everything
            closed = self.windows.flush()
        elif self.applied_ms == END_MS or wm > self.applied_ms:
            closed = self.windows.advance(wm)
        else:
            return []
        self.applied_ms = wm
        self.meta["applied"] = wm
        self.meta["closed_before"] = self.windows.closed_before_ms
        return closed

    def changelog(self) -> list[Record]:
        if self.cardinality.changed:  # rare: only when a name is admitted
            self.meta["cardinality"] = dict(self.cardinality.state)
            self.cardinality.changed = False
        return changelog(self.windows_state) + changelog(self.experiments) + changelog(self.meta)


class JudgingStage:
    def __init__(
        self,
        app: ShadowApp,
        settings: Settings,
        policy: Policy,
        pairs_partitions: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.policy = policy
        self.partitions = pairs_partitions
        self.metrics = metrics
        self.writer = ClickHouseWriter(
            settings.store_dsn,
            settings.database,
            settings.ch_batch,
            max_buffered_rows=settings.ch_max_buffered_rows,
            backoff=Backoff(settings.ch_retry_initial_s, settings.ch_retry_max_s),
            metrics=metrics,
        )
        self.outputs = Outputs(self.writer, MetricsSink(metrics) if metrics else None)
        self.windows_table = task_table(app, "windows", pairs_partitions)
        self.experiments_table = task_table(app, "experiments", pairs_partitions)
        self.meta_table = task_table(app, "judging-meta", pairs_partitions)
        self.tasks: dict[int, JudgingTask] = {}
        self.counts: Counter[str] = Counter()
        gapless = set() if settings.exactly_once else {settings.topic_pairs}
        self.positions = Positions(self.counts, gapless=gapless)
        app.positions.append(self.positions)
        self.signer = control.control_signer(settings)
        self.operators = control.operator_verifier(settings)
        if metrics is not None:
            metrics.set_control_unsigned(self.signer.unsigned)

    # -- wiring

    def register(self, *, dead_letters: bool) -> None:
        s, app = self.settings, self.app
        pairs = app.topic(s.topic_pairs, key_serializer="raw", value_serializer="raw")

        async def judging(stream: Any) -> None:
            async for events in stream.take_events(s.batch_size, within=s.batch_within_s):
                async with app.processing(e.message.tp for e in events):
                    await self.process(events)
                    for event in events:
                        await stream.ack(event)
                await self.writer.throttle()

        async def apply_commands(stream: Any) -> None:
            async for events in stream.take_events(s.batch_size, within=s.batch_within_s):
                # a command changes the state of the task that judges its experiment
                async with app.processing(self.task(e.message.partition).tp for e in events):
                    await self.commands(events)
                    for event in events:
                        await stream.ack(event)

        commands = app.topic(s.topic_commands, key_serializer="raw", value_serializer="raw")
        app.agent(pairs, name="judging")(judging)
        app.agent(commands, name="commands")(apply_commands)

        async def heartbeat() -> None:
            # no barrier: it reads the state between two steps of a batch and commits on
            # its own (`_send_control`), behind no batch, store or model
            await self.heartbeat()

        app.timer(self.policy.ramp.heartbeat_ms / 1000.0, name="heartbeat")(heartbeat)
        if dead_letters:
            dlq = app.topic(s.topic_deadletter, key_serializer="raw", value_serializer="raw")

            async def store_dead_letters(stream: Any) -> None:
                async for events in stream.take_events(s.batch_size, within=s.batch_within_s):
                    async with app.processing(e.message.tp for e in events):
                        fresh = [e for e in events if self.positions.fresh(e.message)]
                        letters = [
                            read_dead_letter(e.message.value, e.message.headers) for e in fresh
                        ]
                        if s.redact:
                            letters = [redact_letter(x) for x in letters]
                        self.counts["dead_letters"] += len(letters)
                        self.writer.open()  # co-partitioned with shadow.pairs: same owner
                        self.outputs.dead_letters(letters)
                        for event in events:
                            await stream.ack(event)
                    await self.writer.throttle()

            app.agent(dlq, name="dead-letters")(store_dead_letters)
        sinks = frozenset((s.topic_pairs, s.topic_commands, s.topic_deadletter))
        app.commit_hooks.append((sinks, self.writer.drain))  # their rows before their offsets
        app.control_source = s.topic_pairs
        self.windows_table.on_recover(self.on_recovered)
        app.on_partitions_assigned.connect(self.on_assigned)

    async def on_recovered(self) -> None:
        for tp in self.app.assignor.assigned_actives():
            if tp.topic == self.settings.topic_pairs and tp.partition not in self.tasks:
                self.tasks[tp.partition] = JudgingTask(self, tp.partition)
        if self.tasks:
            self.writer.open()
        log.info("judging tasks after recovery: %s", sorted(self.tasks))

    async def on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == self.settings.topic_pairs}
        self.positions.keep(assigned)
        for p in sorted(set(self.tasks) - mine):
            del self.tasks[p]
            for table in (self.windows_table, self.experiments_table, self.meta_table):
                table.forget_partition(p)
        if not mine:
            self.writer.close()  # let the new owner of the sink partitions open the store

    def task(self, partition: int) -> JudgingTask:
        task = self.tasks.get(partition)
        if task is None:
            task = self.tasks[partition] = JudgingTask(self, partition)
            self.writer.open()
        return task

    # -- processing

    async def process(self, events: Sequence[Any]) -> None:
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for event in events:
            by_partition[event.message.partition].append(event)
        for partition, batch in by_partition.items():
            task = self.task(partition)
            with in_task(task.tp):
                await self._process(task, batch)

    async def _process(self, task: JudgingTask, batch: Sequence[Any]) -> None:
        scores: list[PairScore] = []
        closed: list[ClosedWindow] = []
        for event in batch:
            msg = event.message
            if not self.positions.fresh(msg):
                continue
            kind = record_type(msg.headers)
            if kind == WATERMARK:
                closed += self._close(task, task.observe(Watermark.decode(msg.value)), scores)
            elif kind == PAIRS:
                batch_scores = decode_pairs(msg.value)
                self.counts["pairs"] += len(batch_scores)
                placement = task.placement_ms()
                placed, overflowed = task.cardinality.place(batch_scores)
                for score in placed:
                    task.windows.add(score, placement)
                self._count_overflow(overflowed)
                scores += batch_scores
            elif kind in LATER:
                self.outputs.pairs(scores)  # the rows a later score replaces go first
                scores.clear()
                self._later(task, LATER[kind], decode_pairs(msg.value))
            else:
                self.counts["unknown_records"] += 1
        self.outputs.pairs(scores)
        await self._send_decisions()
        await produce(self.app, task.changelog())

    def _later(self, task: JudgingTask, what: Later, rows: list[PairScore]) -> None:
        """Pairs again with a score of kind `what` they went out without: only that score
        goes into the windows, placed as their pairs were (the limits admitted or refused
        the same names then: they only ever admit more), into the open window when their
        own has closed (counted)."""
        name = _LATER_COUNTS[what]
        self.counts[name] += len(rows)
        placement = task.placement_ms()
        placed, _ = task.cardinality.place(rows)  # the overflow was counted with the pair
        self.counts[f"{name}_late"] += sum(
            task.windows.add_later(score, placement, what) for score in placed
        )
        self.outputs.later(rows, what)

    def _count_overflow(self, overflowed: Overflowed) -> None:
        """Pairs beyond `policy.limits`: counted here, in metrics and (from the pairs and
        windows tables) in the report."""
        for (kind, experiment), n in overflowed.items():
            if not self.counts[f"overflow.{kind}"]:
                log.warning(
                    "policy.limits.max_%ss reached%s: later ones are counted "
                    "(shadowlens_limit_overflow_total) and %s",
                    kind,
                    f" in experiment {experiment!r}" if experiment else "",
                    "stored, not judged" if kind == Overflow.EXPERIMENT else "judged as (other)",
                )
            self.counts[f"overflow.{kind}"] += n
            if self.metrics is not None:
                self.metrics.observe_overflow(str(kind), experiment, n)

    def _close(
        self, task: JudgingTask, closed: list[ClosedWindow], scores: list[PairScore]
    ) -> list[ClosedWindow]:
        if closed:
            self.outputs.pairs(scores)  # a window's pairs are queued before its row
            scores.clear()
            task.judging.judge(closed)
            self.counts["windows"] += len(closed)
        return closed

    async def _send_decisions(self) -> None:
        """Publish the running task's new decisions at once (`_send_control`). Each is
        numbered per experiment in the task's state (``decided/``), and the number of the
        last one published (``published/``) goes out with it: a decision made again after
        a restart from an earlier commit (the same one: the judge is deterministic) is not
        published twice."""
        decided, self.outputs.decided = self.outputs.decided, []
        tp = current_task()
        if not decided or tp is None:
            return
        task = self.tasks[tp.partition]
        now_ms = int(time.time() * 1000)
        lease = self.policy.ramp.lease_ms
        messages, marks = [], []
        for d in decided:
            made, published = f"decided/{d.experiment}", f"published/{d.experiment}"
            n = task.meta[made] = task.meta.get(made, 0) + 1
            if n <= task.meta.get(published, 0):
                self.counts["decisions_made_again"] += 1
                continue
            task.meta[published] = n
            marks.append(published)
            messages.append((d.experiment, control.decision_message(d, now_ms, lease)))
            self.counts[f"decisions.{d.action}"] += 1
            log.info(
                "decision %s epoch %d: %s %s%% -> %s%% (%s)",
                d.experiment, d.epoch, d.action, d.from_percent, d.to_percent, d.reason[:200],
            )  # fmt: skip
        await self._send_control(task, messages, [changelog_record(task.meta, m) for m in marks])

    async def commands(self, events: Sequence[Any]) -> None:
        """Apply operator commands, each in the task that judges its experiment."""
        for event in events:
            msg = event.message
            if self.positions.fresh(msg):
                task = self.task(msg.partition)
                with in_task(task.tp):
                    await self._command(task, msg)

    async def _command(self, task: JudgingTask, msg: Any) -> None:
        now_ms = int(time.time() * 1000)
        raw, source = msg.value or b"", f"{msg.topic}/{msg.partition}/{msg.offset}"
        max_age_ms = int(self.settings.command_max_age_s * 1000)
        try:
            command = control.read_command(raw, self.operators, now_ms, max_age_ms)
            decision = task.judging.command(command, task.placement_ms())
        except (control.CommandRejected, CommandRefused) as exc:
            code = exc.reason if isinstance(exc, control.CommandRejected) else str(exc.refusal)
            self._count_command(code)
            log.warning("command %s refused, nothing changed: %s", source, exc)
            letter = DeadLetter(COMMAND_REFUSED, str(exc), raw, now_ms, None, source)
            value, headers = dead_letter_record(letter)
            dlq = self.settings.topic_deadletter
            await produce(self.app, [(dlq, msg.key, value, None, headers)])
            return
        self._count_command("applied")
        log.warning("command %s applied: %s", source, decision.reason)
        await self._send_decisions()
        await produce(self.app, task.changelog())

    def _count_command(self, outcome: str) -> None:
        self.counts[f"commands.{outcome}"] += 1
        if self.metrics is not None:
            self.metrics.observe_command(outcome)

    async def heartbeat(self) -> None:
        if self.app.failed is not None:
            return  # a worker that stops renews no lease
        now_ms = int(time.time() * 1000)
        ramp_policy = self.policy.ramp
        for task in list(self.tasks.values()):
            messages = [
                (experiment, control.heartbeat_message(experiment, state, ramp_policy, now_ms))
                for experiment, state in task.experiments.items()
            ]
            await self._send_control(task, messages)
            self.counts["heartbeats"] += len(messages)
            if self.metrics is not None:
                for experiment, _ in messages:
                    self.metrics.observe_heartbeat(experiment, now_ms)

    async def _send_control(
        self,
        task: JudgingTask,
        messages: list[tuple[str, dict[str, Any]]],
        marks: Sequence[Record] = (),
    ) -> None:
        """Sign and publish `task`'s control messages in a transaction of their own that
        commits at once (`ShadowApp.publish_control`), with `marks` (changelog records):
        routers see them without waiting for the task's commit, which may wait for a
        slow store or a long batch."""
        topic, sign = self.settings.topic_control, self.signer
        records: list[Record] = [
            (topic, experiment.encode(), control.encode(sign(message)), None, None)
            for experiment, message in messages
        ]
        if records:
            await self.app.publish_control(task.tp, records + list(marks))

    def stats(self) -> dict[str, Any]:
        return {"judging_tasks": sorted(self.tasks), **dict(self.counts)}
