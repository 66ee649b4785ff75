"""The pairing agent: decode -> route -> pair -> score, one task per events partition.

Input: ``shadow.events`` and ``shadow.events.repartition`` (same partition count; partition
p of both is task p). For each record, in partition order:

* bad bytes go to the dead-letter topic (original value, reason in headers) and the stream
  goes on;
* an event that is not on its pairing partition (``murmur2(request_id) % partitions``:
  keyed by something else, or by a client whose partitioner differs) is forwarded to the
  repartition topic, keyed by its request id;
* otherwise it joins its request in the pairing table through `shadowlens.pipeline.pairing.Pairer`;
  pairs, orphans and split singles are scored (`shadowlens.comparators.pairs`) and produced to
  ``shadow.pairs`` keyed by experiment; the semantic model's scores and the preference
  judge's verdicts follow them as ``semantic`` and ``judgment`` records, collected with the
  task's next batch or timer run (`shadowlens.streams.later`): neither holds a batch.

Each event read from the events topic is first checked against its partition's progress
(`shadowlens.pipeline.progress`, with the wall clock): one dated too far ahead, or with a
call longer than ``pairing.max_call_ms``, is dead-lettered and moves nothing.
Orphans are swept by the task's event-time watermark, after each batch and on a timer.
Every task then publishes its progress -- "no pair older than W will come from me" --
to every pairs partition; the judging side closes windows at the minimum over tasks.

An ``end-of-input`` marker (a finite replay is over) is forwarded to every repartition
partition; once a task has its own and every forwarded one, everything it holds is
flushed (`Pairer.flush`) and it reports the end watermark.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from faust.types import TP
from shadowlens.comparators.cascade import Budget
from shadowlens.comparators.pairs import PairScore
from shadowlens.job.redaction import redact_score
from shadowlens.job.scoring import Scorer, pairing_config
from shadowlens.judge.policy import Policy
from shadowlens.pipeline.pairing import Matched, Pairer, Pending
from shadowlens.pipeline.progress import Admitted, Progress
from shadowlens.schemas.events import (
    DeadLetter,
    DeadLetterReason,
    Event,
    InvalidEvent,
    decode_event,
)
from shadowlens.schemas.markers import END_OF_INPUT, TYPE_HEADER
from shadowlens.streams.codec import check_storable, decode_pending, encode_pending
from shadowlens.streams.config import Settings
from shadowlens.streams.later import FollowUps
from shadowlens.streams.metrics import Metrics
from shadowlens.streams.preference_stage import JudgeSettings, PreferenceStage
from shadowlens.streams.semantic_stage import SemanticStage
from shadowlens.streams.task_state import (
    Positions,
    Record,
    TaskState,
    changelog,
    produce_tasks,
    task_table,
)
from shadowlens.streams.wire import (
    END_MS,
    PAIRS,
    WATERMARK,
    Watermark,
    dead_letter_record,
    encode_pairs,
    pairing_partition,
    record_type,
)

if TYPE_CHECKING:
    from shadowlens.streams.transactions import ShadowApp

log = logging.getLogger(__name__)

REPUBLISH_S = 10.0  # a task re-sends an unchanged watermark this often

Source = tuple[bytes, bytes | None, str]  # an event's bytes, its record key, topic/partition/offset


class PairingTask:
    """What one events partition owns: its slice of the pairing table, its Pairer, and the
    progress of every input it pairs from (its events partition, and what the other
    tasks forward to it through the repartition topic)."""

    def __init__(self, stage: PairingStage, partition: int) -> None:
        s = stage.settings
        self.partition = partition
        self.tp = TP(s.topic_events, partition)
        self.inputs = (self.tp, TP(s.topic_repartition, partition))
        # A closed request forgotten while the input that closed it may be read again
        # (the batch in flight at a crash, under at_least_once) would come back as an
        # orphan; a forgotten request that comes back closed is harmless.
        self.state: TaskState[str, Pending] = TaskState(
            stage.pending, partition, encode_pending, decode_pending, delay_deletes=True
        )
        self.meta: TaskState[str, Any] = TaskState(
            stage.meta, partition, orjson.dumps, orjson.loads
        )
        self.scorer = Scorer(stage.policy, stage.counts)  # drops, shed: the worker's stats
        config = pairing_config(stage.policy)
        self.pairer = Pairer(self.state, config)
        self.others = [q for q in range(stage.partitions) if q != partition]
        # progress of this task's events partition, which it forwards to the others
        self.progress: Progress[Source] = Progress(
            config, int(self.meta.get("newest", 0)), _held(self.meta.get("held"))
        )
        self.followed_ms = int(self.meta.get("followed", 0))  # adopted while idle
        self.events_done = bool(self.meta.get("events_done", False))
        self.input_at = time.monotonic()
        # progress of what each other task forwards here; END_MS once its input ended
        self.forward: dict[int, int] = {int(q): v for q, v in self.meta.get("forward", {}).items()}
        self.ended = bool(self.meta.get("ended", False))
        self.swept_ms = int(self.meta.get("swept", 0))
        self.published: dict[str, int] = {}
        self.published_at = 0.0
        # this task's share of the semantic budget: kept, so a restart or another owner
        # goes on with the same bucket, not a full one
        saved = self.meta.get("semantic_budget")
        self.semantic_budget: Budget | None = (
            None if stage.semantic is None
            else Budget(*saved) if saved
            else stage.semantic.full_budget()
        )  # fmt: skip
        stage.positions.resume(self.meta.get("offsets", {}))

    def score(self, matched: Matched) -> list[PairScore]:
        return self.scorer.score(matched)

    @property
    def events_wm(self) -> int:
        """This events partition's progress: its accepted events', or what it followed."""
        return max(self.progress.watermark_ms, self.followed_ms)

    def saw_event(self) -> None:
        self.events_done = False
        self.input_at = time.monotonic()

    def follow_if_idle(self, idle_after_s: float) -> None:
        """An events partition that has been silent for `idle_after_s` (wall clock) would
        hold every other task's watermark back: it follows the most advanced one instead.
        Event time, not the wall clock, so a replay of old traffic behaves the same. What it
        follows is another partition's `Progress`, which no single event moves further
        than the skew allowance its watermark already trails by: nothing bad to spread."""
        if not idle_after_s or self.events_done:
            return
        if time.monotonic() - self.input_at < idle_after_s:
            return
        others = [v for v in self.forward.values() if v != END_MS]
        if others and max(others) > self.events_wm:
            self.followed_ms = max(others)

    def forward_progress(self) -> int:
        """What this task tells the others: no forwarded event completing earlier will come."""
        return END_MS if self.events_done else self.events_wm

    def watermark_ms(self) -> int:
        """The minimum over every events partition's progress: this task's own, and that
        of each task forwarding to it. A request is not swept while any of them may still
        send one of its halves (the Pairer's own watermark, the newest completion it
        has seen from any input, runs ahead of the slowest input)."""
        return min([self.forward_progress(), *(self.forward.get(q, 0) for q in self.others)])

    def inputs_ended(self) -> bool:
        return self.events_done and all(self.forward.get(q) == END_MS for q in self.others)

    def progress_ms(self) -> int:
        """The pair-time watermark this task publishes: where it last swept. A later pair
        completes after the watermark and a later orphan's deadline is past the sweep."""
        return END_MS if self.ended else self.swept_ms

    def sweep(self, step_ms: int) -> Matched:
        wm = self.watermark_ms()
        if wm - self.swept_ms < step_ms:
            return Matched()
        self.swept_ms = wm
        return self.pairer.sweep(wm)

    def remember(self, positions: Positions) -> None:
        self.meta["offsets"] = positions.applied(*self.inputs)
        self.meta["newest"] = self.progress.newest_ms
        held = self.progress.held
        self.meta["held"] = None if held is None else _held_doc(held[1])
        self.meta["followed"] = self.followed_ms
        self.meta["events_done"] = self.events_done
        self.meta["forward"] = {str(q): v for q, v in self.forward.items()}
        self.meta["ended"] = self.ended
        self.meta["swept"] = self.swept_ms
        if self.semantic_budget is not None:
            self.meta["semantic_budget"] = [
                self.semantic_budget.allowance,
                self.semantic_budget.clock_ms,
            ]


Done = tuple[PairingTask, list[Record], list[PairScore]]  # a task's batch: records, scores
Step = tuple[Matched, Source]  # what one event's pairing gave, and the event's bytes


class PairingStage:
    """Tables, agent and timer of the pairing side, wired into `app` by `register`."""

    def __init__(
        self,
        app: ShadowApp,
        settings: Settings,
        policy: Policy,
        events_partitions: int,
        pairs_partitions: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.settings = settings
        self.policy = policy
        self.partitions = events_partitions
        self.pairs_partitions = pairs_partitions
        self.sweep_step_ms = max(1, policy.windows.size_ms // 10)
        self.pending = task_table(app, "pairing", events_partitions)
        self.meta = task_table(app, "pairing-meta", events_partitions)
        self.tasks: dict[int, PairingTask] = {}
        self.counts: Counter[str] = Counter()
        self.later = FollowUps(self.counts)
        self.semantic = SemanticStage.build(
            settings.semantic,
            policy,
            self.counts,
            self.later,
            events_partitions,
            settings.semantic_timeout_s,
            metrics,
        )
        judging = JudgeSettings(
            settings.judge,
            settings.judge_data,
            settings.judge_api_base or None,
            settings.judge_api_key or None,
            allow_self=settings.judge_allow_self,
            max_pending=settings.judge_max_pending,
        )
        self.preference = PreferenceStage.build(judging, policy, self.counts, self.later)
        self.events_by_partition: Counter[int] = Counter()
        self.first_event_at: float | None = None
        # Without transactions nothing writes markers into these: an offset gap is a loss.
        gapless = {settings.topic_events}
        if not settings.exactly_once:
            gapless.add(settings.topic_repartition)
        self.positions = Positions(self.counts, gapless=gapless)
        app.positions.append(self.positions)

    # -- wiring

    def register(self) -> None:
        s, app = self.settings, self.app
        source = app.topic(
            s.topic_events,
            s.topic_repartition,
            key_serializer="raw",
            value_serializer="raw",
            acks=True,
        )

        async def pairing(stream: Any) -> None:
            async for events in stream.take_events(s.batch_size, within=s.batch_within_s):
                async with app.processing(e.message.tp for e in events):
                    await self.process(events)
                    for event in events:
                        await stream.ack(event)

        async def tick() -> None:
            async with app.processing(task.tp for task in list(self.tasks.values())):
                await self.tick()

        app.agent(source, name="pairing")(pairing)
        app.timer(s.sweep_interval_s, name="pairing-sweep")(tick)
        self.pending.on_recover(self.on_recovered)
        app.on_partitions_assigned.connect(self.on_assigned)

    async def on_recovered(self) -> None:
        for tp in self.app.assignor.assigned_actives():
            if tp.topic == self.settings.topic_events and tp.partition not in self.tasks:
                self.tasks[tp.partition] = PairingTask(self, tp.partition)
        log.info("pairing tasks after recovery: %s", sorted(self.tasks))

    async def on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == self.settings.topic_events}
        self.positions.keep(assigned)
        for p in sorted(set(self.tasks) - mine):
            del self.tasks[p]
            self.later.drop(p)
            self.pending.forget_partition(p)
            self.meta.forget_partition(p)

    def task(self, partition: int) -> PairingTask:
        task = self.tasks.get(partition)
        if task is None:  # records arrive only after recovery; build from the table
            task = self.tasks[partition] = PairingTask(self, partition)
        return task

    # -- processing

    async def process(self, events: Sequence[Any]) -> None:
        if self.first_event_at is None:
            self.first_event_at = time.time()
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for event in events:
            by_partition[event.message.partition].append(event)
        done = [self._process(self.task(p), batch) for p, batch in by_partition.items()]
        await self._emit(done)

    def _process(self, task: PairingTask, batch: Sequence[Any]) -> Done:
        s = self.settings
        sends: list[Record] = []
        steps: list[Step] = []
        now_ms = int(time.time() * 1000)
        for event in batch:
            msg = event.message
            if not self.positions.fresh(msg):
                continue
            self.events_by_partition[task.partition] += 1
            kind = record_type(msg.headers)
            if kind == WATERMARK and msg.topic == s.topic_repartition:  # another task's progress
                mark = Watermark.decode(msg.value)
                task.forward[mark.partition] = mark.watermark_ms
                continue
            if kind == END_OF_INPUT:
                self._admitted(task, task.progress.end(), sends, steps, now_ms)
                task.events_done = True
                continue
            raw = msg.value if msg.value is not None else b""
            source = f"{msg.topic}/{msg.partition}/{msg.offset}"
            try:
                decoded = decode_event(raw)
            except InvalidEvent as exc:
                self._dead(sends, DeadLetter.of(exc, raw, now_ms, source), msg.key)
                continue
            if msg.topic == s.topic_events:  # forwarded ones were checked where they came in
                task.saw_event()
                admitted = task.progress.admit(decoded, (raw, msg.key, source), now_ms)
                self._admitted(task, admitted, sends, steps, now_ms)
            else:
                self._pair(task, decoded, (raw, msg.key, source), sends, steps, now_ms)
        return task, sends, self._score(task, steps, sends, now_ms) + self._advance(task)

    def _admitted(
        self,
        task: PairingTask,
        admitted: Admitted[Source],
        sends: list[Record],
        steps: list[Step],
        now_ms: int,
    ) -> None:
        """Dead-letter what the progress check rejected; route and pair what it accepted."""
        for r in admitted.rejected:
            raw, key, source = r.payload
            letter = DeadLetter(r.reason, r.detail, raw, now_ms, r.event.request_id, source)
            self._dead(sends, letter, key)
        for event, (raw, key, source) in admitted.accepted:
            target = pairing_partition(event.request_id, self.partitions)
            if target != task.partition:
                self.counts["rekeyed"] += 1
                sends.append(
                    (self.settings.topic_repartition, event.request_id.encode(), raw, target, None)
                )
                continue
            self._pair(task, event, (raw, key, source), sends, steps, now_ms)

    def _pair(
        self,
        task: PairingTask,
        event: Event,
        came_as: Source,
        sends: list[Record],
        steps: list[Step],
        now_ms: int,
    ) -> None:
        """Pair one event; what it completes is scored with the rest of the batch."""
        self.counts["events"] += 1
        task.ended = False
        try:
            check_storable(event)
            matched = task.pairer.add(event)
            self._count_shed(matched)
        except Exception as exc:  # a bug must not stop the stream: keep the bytes
            self._failed(sends, came_as, exc, now_ms)
            return
        steps.append((matched, came_as))

    def _score(
        self, task: PairingTask, steps: list[Step], sends: list[Record], now_ms: int
    ) -> list[PairScore]:
        """The batch's pairing steps scored at once (an answer in several pairs is read
        once), in the order of their events; an event whose step fails is dead-lettered."""
        scores, failed = task.scorer.score_each(steps)
        for came_as, exc in failed:
            self._failed(sends, came_as, exc, now_ms)
        return scores

    def _failed(self, sends: list[Record], came_as: Source, exc: Exception, now_ms: int) -> None:
        """A bug must not stop the stream: the event's bytes go to the dead-letter topic."""
        raw, key, source = came_as
        log.exception("pairing failed for %s", source, exc_info=exc)
        reason = DeadLetterReason.PROCESSING_ERROR
        self._dead(sends, DeadLetter(reason, repr(exc)[:500], raw, now_ms, None, source), key)

    def _count_shed(self, matched: Matched) -> None:
        """The pairing table hit `pairing.max_pending` and closed open requests early: the
        metric, per experiment (the count, ``pairing.shed``, is the `Scorer`'s)."""
        if matched.shed and self.metrics is not None:
            self.metrics.observe_shed(matched.shed_experiment, matched.shed)

    def _advance(self, task: PairingTask) -> list[PairScore]:
        """Sweep by the watermark; once every input has ended, flush everything."""
        scores = task.score(task.sweep(self.sweep_step_ms))
        if task.inputs_ended() and not task.ended:
            task.ended = True
            self.counts["end_of_input"] += 1
            scores += task.score(task.pairer.flush())
        return scores

    def _dead(self, sends: list[Record], letter: DeadLetter, key: bytes | None) -> None:
        self.counts[f"dead_letter.{letter.reason}"] += 1
        value, headers = dead_letter_record(letter)
        sends.append((self.settings.topic_deadletter, key, value, None, headers))

    async def _emit(self, done: list[Done]) -> None:
        """Produce every task's outputs, wait for the broker, then persist every task's
        state, then the input offsets that state holds (see `docs/streaming.md`: outputs
        are durable before the state that says they were made, and the state before the
        offsets that let a restart skip its input). Each record goes out in its task's
        transaction; the broker is waited for three times per batch, not per task."""
        outputs = [
            (task.tp, sends + self._pair_records(task, scores) + self._watermarks(task))
            for task, sends, scores in done
        ]
        await produce_tasks(self.app, outputs)
        tasks = [task for task, _, _ in done]
        await produce_tasks(self.app, [(task.tp, changelog(task.state)) for task in tasks])
        for task in tasks:
            task.remember(self.positions)
        await produce_tasks(self.app, [(task.tp, changelog(task.meta)) for task in tasks])

    def _pair_records(self, task: PairingTask, scores: list[PairScore]) -> list[Record]:
        """Scored pairs as ``shadow.pairs`` records, keyed by experiment, then the task's
        semantic scores and judgments that have come back (`shadowlens.streams.later`:
        neither the model nor the judge holds a batch)."""
        if self.semantic is not None and task.semantic_budget is not None:  # reads the bodies
            scores, task.semantic_budget = self.semantic.enrich(
                scores, task.partition, task.semantic_budget
            )
        if self.preference is not None:  # so does the judge
            scores = self.preference.enrich(scores, task.partition)
        for score in scores:
            self.counts[f"pairs.{score.outcome}"] += 1
        records = self._records(scores, _PAIRS_H)
        for what, rows in self.later.finished(task.partition):
            records += self._records(rows, [(TYPE_HEADER, what.encode())])
        return records

    def _records(self, scores: list[PairScore], headers: list[tuple[str, bytes]]) -> list[Record]:
        s = self.settings
        by_experiment: dict[str, list[PairScore]] = defaultdict(list)
        for score in scores:
            if s.redact:  # bodies never leave the pairing stage
                score = redact_score(score)
            by_experiment[score.experiment].append(score)
        return [
            (s.topic_pairs, experiment.encode(), value, None, headers)
            for experiment, group in by_experiment.items()
            for value in encode_pairs(group)
        ]

    def _watermarks(self, task: PairingTask) -> list[Record]:
        """Progress records, when they changed (or went unsent for `REPUBLISH_S`): the
        pair-time watermark to every pairs partition, and this task's forwarding
        progress to every other task (through the repartition topic, after what it
        forwarded in this batch)."""
        s = self.settings
        stale = time.monotonic() - task.published_at > REPUBLISH_S
        out: list[Record] = []
        pairs_partitions = range(self.pairs_partitions)
        scoring = self.later.waiting(task.partition)
        targets = (
            ("pairs", task.progress_ms(), s.topic_pairs, pairs_partitions),
            ("forward", task.forward_progress(), s.topic_repartition, task.others),
        )
        for name, progress, topic, partitions in targets:
            if task.published.get(name) == progress and not stale:
                continue
            if name == "pairs" and progress == END_MS and scoring:
                continue  # scores to come: the windows may not all close yet
            task.published[name] = progress
            mark = Watermark(task.partition, self.partitions, progress)
            value = mark.encode()
            out += [(topic, mark.key, value, q, _WATERMARK_H) for q in partitions]
        if stale:
            task.published_at = time.monotonic()
        return out

    async def tick(self) -> None:
        """Timer: sweep orphans by the watermark and publish progress, per task."""
        for task in self.tasks.values():
            task.follow_if_idle(self.settings.idle_after_s)
        await self._emit([(task, [], self._advance(task)) for task in list(self.tasks.values())])

    def stop(self) -> None:
        """The worker is stopping: scores in flight are lost (`FollowUps.stop`)."""
        self.later.stop()
        for stage in (self.semantic, self.preference):
            if stage is not None:
                stage.stop()

    def stats(self) -> dict[str, Any]:
        return {
            "pairing_tasks": sorted(self.tasks),
            "first_event_at": self.first_event_at,
            "events_by_partition": {str(k): v for k, v in sorted(self.events_by_partition.items())},
            **dict(self.counts),
        }


def _held_doc(source: Source) -> dict[str, str | None]:
    """A held event as the pairing-meta table stores it: its bytes, to decode again."""
    raw, key, where = source
    return {
        "raw": base64.b64encode(raw).decode(),
        "key": None if key is None else base64.b64encode(key).decode(),
        "source": where,
    }


def _held(doc: dict[str, str | None] | None) -> tuple[Event, Source] | None:
    if not doc:
        return None
    raw = base64.b64decode(doc["raw"] or "")
    key = None if doc["key"] is None else base64.b64decode(doc["key"])
    return decode_event(raw), (raw, key, str(doc["source"]))


_PAIRS_H = [(TYPE_HEADER, PAIRS)]
_WATERMARK_H = [(TYPE_HEADER, WATERMARK)]
