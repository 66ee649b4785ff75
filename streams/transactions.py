"""How the worker commits: a barrier per task, sinks written first, one transaction per
task, control messages on their own.

Faust commits offsets on a timer while agents keep running. What is added here:

1. A processing barrier per task (`ShadowApp.task_id`: a partition of a group of
   co-partitioned topics, the unit of a transaction). Agents and timers hold the barriers
   of the tasks in their batch while they process it *and ack it*; a commit holds one
   task's barrier from the moment it picks that task's offsets until the broker has them,
   and commits task by task. A commit therefore never sees a half-processed batch: every
   acked record's outputs have been produced, and nothing is produced for a record that is
   not acked yet. A task held by a long batch (a model that stalls a pairing batch) is left
   for a later commit after waiting half a commit interval; it holds up no other task. Until
   issue 15 this was one lock for the whole worker: a 60 s stall of the encoder or of a
   ClickHouse insert held every agent, timer and commit, and no heartbeat was published
   for the whole stall. Transactions may therefore stay open through a stall:
   `TRANSACTION_TIMEOUT_MS` (5 min) instead of aiokafka's 60 s; a longer one makes the
   broker abort them, the next commit fails and the worker stops, to restart from the last
   commit.
2. Sinks are written before the offsets that produced their rows go out
   (`ShadowApp.before_commit`, for the tasks whose topics a hook names): a ClickHouse
   insert that fails fails the commit, so the records are processed again instead of
   being lost. A hook that raises `CommitDeferred` skips that task's commit: nothing is
   committed, nothing fails. The ClickHouse writer does so while the store is down (its
   rows are buffered and retried) and when its writes take longer than a moment: the
   commit holds the task's barrier only that long, and the stage waits for the writes
   outside it (`shadowlens.streams.ch_writer`).
3. ``exactly_once``: Faust picks a record's transaction by the partition it is *sent to*,
   which is only right when every output goes to the partition it came from. Here the
   transaction is the *task's* -- the partition being processed (`shadowlens.streams.task_state`) --
   as in Kafka Streams, so a pair produced to ``shadow.pairs`` partition 0 while processing
   ``shadow.events`` partition 5 commits atomically with partition 5's offsets and its
   changelog records. Records produced by timers with no new input (orphan sweeps,
   watermarks) are committed too; Faust would leave them in an open transaction that
   read_committed consumers never see.

A failed batch, timer run or commit stops the worker and nothing is committed after it
(`ShadowApp.processing`): its in-memory state and positions may be ahead of what was
produced, and only a restart from the last commit (recovery from the changelogs) makes them
agree again.

4. Offsets are the agents' own positions: after the last record each agent processed
   (`task_state.Positions`). Faust derives them from acknowledged offsets and the gaps it
   saw, and can stay behind for good after transaction markers; a transaction would then
   commit state changes without the offsets of the records that made them, and a restart
   would apply those records twice.
5. A Faust race is closed: after table recovery Faust resumes the source partitions and
   *then* seeks them to their committed offsets. Records fetched in between reach the
   consumer loop after the seek; it takes their offsets for a gap (as after transaction
   markers), counts the gap as acknowledged, and commits past records never processed
   (faust-streaming issues #216 and #596 describe the same family). Here the resume waits
   until the seek is done.
6. Table recovery asks the broker where each changelog ends. Under exactly_once Faust
   answers from the consumer's cached last stable offset instead, which is unknown (None,
   read as "empty") for a changelog partition not fetched yet: a restarted worker then
   rebuilt nothing and went on from its committed offsets with empty tables (seen after a
   kill -9: pending halves forgotten, swept as orphans, watermarks restarted at 0). Here
   `highwaters` asks the broker: the last stable offset (read_committed ListOffsets; the
   producers of the task transactions are initialised before recovery, and initialising
   one completes its killed predecessor's transaction first, so that offset is final).
   Faust then reads up to the record before it, which under transactions is a commit or
   abort marker that never reaches a consumer: it waited two idle 5 s polls before giving
   up on it, 10 s of every start. So the offset passed on is the one right after the last
   record a read_committed consumer gets (`after_last_records`).
7. Faust also guesses that a changelog ends in aborted records: after two idle 5 s polls
   of its changelog queue, a partition whose consumer *position* is at the highwater is
   declared recovered. The position counts records fetched, not records applied, and the
   idle count starts when the worker does, not when recovery does: a worker whose join
   took over 10 s (two peers killed while joining) declared every changelog recovered 2 s
   into reading, dropped the records still on their way (offsets at or below the
   highwater are ignored from then on) and went on with part of its state (seen after a
   kill -9: pending halves forgotten and swept as orphans, windows short). With point 6
   recovery always reaches the highwater (Faust's: the last record's offset) by reading,
   so the guess is never needed: `position` answers for a changelog partition with the
   last offset recovery *applied*, which is at the highwater only once it is done.
8. Faust hands aiokafka the *live* set of active partitions to fetch for, and drops what
   comes back for a partition that is not in it by the time it looks. Both miss records:
   pausing the last active partitions while a fetch waits empties that set, and aiokafka
   reads an empty set as "every partition"; and a record taken from aiokafka has moved its
   position on. Seen when a worker left a group: the one taking over resumed its
   partitions in aiokafka before Faust counted them active, fetched 100-250 records of
   each, dropped them and went on after them (the hand-over test's `input_gaps`). Here a
   fetch asks for a copy of the set, and a partition whose records arrive while it is not
   active is sought back to the first of them, to be fetched again once it is.
9. Control messages (heartbeats, decisions) do not wait for their task's commit, which may
   wait for a slow store or a long batch (points 1, 2): `ShadowApp.publish_control` sends
   them in a transaction of their own per task (``<app id>-control-<partition>``),
   committed at once. In the task's transaction they would also hold back every later
   record of their ``shadow.control`` partition from read_committed routers while it is
   open. Faust starts these producers with the tasks' (point 6: before recovery, fencing
   the previous owner's). A decision is then visible before the state that made it is
   committed; after a crash the judge makes it again from the last commit, and a mark
   committed with the message (how many decisions of its experiment went out) keeps it
   from going out twice (`shadowlens.streams.judging_stage`). Heartbeats take no barrier.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from faust.transport.consumer import TransactionManager
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from shadowlens.streams.delivery import EagerDelivery
from shadowlens.streams.task_state import Positions, Record, current_task, produce

CommitHook = Callable[[], Awaitable[None]]
# Long enough for a stalled store or model (point 1), within the broker's default maximum
# (transaction.max.timeout.ms, 15 min). A killed worker's open transactions are aborted
# sooner: by the next owner of their partitions, when it starts its producers.
TRANSACTION_TIMEOUT_MS = 300_000

log = logging.getLogger(__name__)


class CommitDeferred(Exception):
    """Raised by a commit hook: not now (e.g. the sink is down and retrying). The commit
    is skipped, no offset goes out; a later commit tries again."""


class ShadowApp(faust.App):
    """A Faust app whose transport commits task by task through the barriers (see the
    module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.barriers: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.commit_hooks: list[tuple[frozenset[str], CommitHook]] = []
        self.control_source: str | None = None  # its tasks publish control messages
        self.positions: list[Positions] = []  # every agent's, see ShadowConsumer
        self.failed: BaseException | None = None
        self.on_rebalance_complete.connect(self._seek_before_resume)

    def task_id(self, tp: TP) -> str:
        """The task `tp` belongs to: its transactional id under exactly_once. Co-partitioned
        topics (same partition count: Faust's topic group) share their tasks."""
        return f"{self.conf.id}-{self.assignor.group_for_topic(tp.topic)}-{tp.partition}"

    def control_id(self, tp: TP) -> str:
        """The transactional id of the control messages of task `tp` (point 8)."""
        return f"{self.conf.id}-control-{tp.partition}"

    @asynccontextmanager
    async def processing(self, tps: Iterable[TP]) -> AsyncIterator[None]:
        """Hold the barriers of the tasks of `tps` for one batch or timer run. If it fails,
        nothing is committed any more and the worker stops: its positions and state may be
        ahead of what it produced, and only a restart from the last commit makes them
        agree again."""
        error: Exception | None = None
        async with AsyncExitStack() as held:
            for task in sorted({self.task_id(tp) for tp in tps}):  # one order: no deadlock
                await held.enter_async_context(self.barriers[task])
            if self.failed is not None:
                raise RuntimeError("an earlier batch failed; the worker is stopping")
            try:
                yield
            except Exception as exc:
                self.failed = error = exc
        if error is not None:
            self.log.error("processing failed, stopping before anything else commits: %r", error)
            await self.crash(error)
            raise error

    async def publish_control(self, tp: TP, records: list[Record]) -> None:
        """Produce task `tp`'s control records now, in a transaction of their own that
        commits at once under exactly_once (point 8): no batch, store or model waits."""
        consumer: ShadowConsumer = self.consumer  # type: ignore[assignment]
        if consumer.in_transaction:
            transactions: TaskTransactionManager = consumer.transactions  # type: ignore[assignment]
            await transactions.publish(self.control_id(tp), records)
        else:
            await produce(self, records)

    async def _seek_before_resume(self, sender: Any = None, **_: Any) -> None:
        # Sent by Recovery right before it resumes the source partitions and seeks them.
        consumer: ShadowConsumer = self.consumer  # type: ignore[assignment]
        consumer.defer_resume = True

    async def before_commit(self, tps: Iterable[TP]) -> None:
        """The commit hooks of the sinks `tps` (one task's inputs) write to."""
        topics = {tp.topic for tp in tps}
        for sources, hook in self.commit_hooks:
            if sources & topics:
                await hook()

    def _new_transport(self) -> Any:
        return ShadowTransport(self.conf.broker_consumer, self)


class TaskTransactionManager(TransactionManager):
    """Transactions per task (source partition), not per destination partition."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dirty: set[str] = set()

    def transactional_id(self, tp: TP) -> str:
        return self.app.task_id(tp)  # type: ignore[attr-defined, no-any-return]

    def _tps_to_transactional_ids(self, tps: set[TP]) -> set[str]:
        """Faust starts (fencing the previous owner's) and stops these with the partitions:
        the tasks', and the control producers of the tasks that publish (point 8)."""
        app: ShadowApp = self.app  # type: ignore[assignment]
        control = {app.control_id(tp) for tp in tps if tp.topic == app.control_source}
        return super()._tps_to_transactional_ids(tps) | control  # type: ignore[no-any-return]

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> Awaitable[Any]:
        p = self.consumer.key_partition(topic, key, partition)
        task = current_task()
        if task is not None:
            tid = self.transactional_id(task)
        elif p is not None:  # a table's changelog record: its partition is its task's
            tid = self.transactional_id(TP(topic, p))
        else:
            raise RuntimeError(f"record for {topic} produced outside any task")
        self._dirty.add(tid)
        producer = self.producer
        txn = producer._transaction_producers.get(tid)  # type: ignore[attr-defined]
        if txn is not None and not txn._txn_manager.is_in_transaction():
            async with producer._trn_locks[tid]:  # type: ignore[attr-defined]
                await txn.begin_transaction()  # ended by a commit that started none
        return await self.producer.send(
            topic, key, value, p, timestamp, headers, transactional_id=tid
        )

    async def commit(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        """Commit the transactions of the tasks with offsets to commit (one task's, called
        by `ShadowConsumer.force_commit`)."""
        await self.producer.flush()  # changelog records buffered by tables join their txn
        by_tid: dict[str, dict[TP, int]] = defaultdict(dict)
        for tp, offset in offsets.items():
            by_tid[self.transactional_id(tp)][tp] = offset
        for tid in sorted(by_tid):
            await self._commit_one(tid, by_tid[tid], start_new_transaction)
        return True

    def dirty(self) -> set[str]:
        """Tasks with records produced since their last commit."""
        return set(self._dirty)

    async def commit_records(self, tid: str, start_new_transaction: bool = True) -> None:
        """Commit task `tid`'s records produced with no input to commit (timers: point 3)."""
        if tid in self._dirty:
            await self.producer.flush()
            await self._commit_one(tid, {}, start_new_transaction)

    async def publish(self, tid: str, records: list[Record]) -> None:
        """Produce `records` in transaction `tid` and commit it at once (point 8)."""
        producer = self.producer
        txn = producer._transaction_producers.get(tid)  # type: ignore[attr-defined]
        if txn is None:
            return  # revoked: the partition's next owner publishes
        async with producer._trn_locks[tid]:  # type: ignore[attr-defined]
            if not txn._txn_manager.is_in_transaction():
                await txn.begin_transaction()
            for topic, key, value, partition, headers in records:
                p = self.consumer.key_partition(topic, key, partition)
                await txn.send(topic, value, key=key, partition=p, headers=headers)
            await txn.commit_transaction()

    async def _commit_one(self, tid: str, offsets: dict[TP, int], start_new: bool) -> None:
        producer = self.producer
        txn = producer._transaction_producers.get(tid)  # type: ignore[attr-defined]
        if txn is None:
            if offsets:
                raise RuntimeError(f"no transactional producer {tid} to commit {offsets}")
            return  # revoked since: the next owner's producer fences this transaction
        self._dirty.discard(tid)
        async with producer._trn_locks[tid]:  # type: ignore[attr-defined]
            if not txn._txn_manager.is_in_transaction():
                if not offsets:
                    return
                await txn.begin_transaction()
            if offsets:
                await txn.send_offsets_to_transaction(offsets, self.app.conf.id)
            await txn.commit_transaction()
            if start_new:
                await txn.begin_transaction()


class ShadowConsumer(EagerDelivery, faust_aiokafka.Consumer):
    """Faust's consumer, with messages delivered without a task each (`streams.delivery`)."""

    defer_resume = False
    _resume_after_seek: set[TP] | None = None

    def _processed(self) -> dict[TP, int]:
        """Per input partition of every stage, the offset after its last processed record."""
        app: ShadowApp = self.app  # type: ignore[assignment]
        return {
            TP(*tp): offset
            for positions in app.positions
            for tp, offset in positions.next_offsets().items()
        }

    def _filter_committable_offsets(self, tps: Any) -> dict[TP, int]:
        """After the last record processed in each partition (point 4 of the module doc)."""
        processed = self._processed()
        offsets: dict[TP, int] = {}
        for tp in tps:
            offset = processed.get(tp)
            if offset is not None and self._should_commit(tp, offset):
                offsets[tp] = offset
                self._forget_acks_below(tp, offset)
        return offsets

    def _forget_acks_below(self, tp: TP, offset: int) -> None:
        keep = [o for o in self._acked[tp] if o >= offset]
        self._acked[tp] = keep
        self._acked_index[tp] = set(keep)
        gap = self._gap.get(tp)
        if gap:
            gap.chop(0, offset)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """Fetch for the partitions active now, not for whatever the set holds by the time
        aiokafka looks (point 8 of the module doc)."""
        frozen = None if active_partitions is None else set(active_partitions)
        return await super()._getmany(active_partitions=frozen, timeout=timeout)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, set[TP] | None]:
        """Faust's, minus the records of partitions not active (any more): they are
        fetched again from the first of them (point 8 of the module doc)."""
        records, active = await super()._wait_next_records(timeout)
        if not records or active is None:
            return records, active
        idle = [tp for tp in records if tp not in active and tp not in self._buffered_partitions]
        assigned = self.assignment()
        back: dict[TP, int] = {}
        for tp in idle:
            first = records.pop(tp)[0].offset
            if tp in assigned:
                back[tp] = first
        if back:
            log.info("fetched while not active, to be fetched again: %s", back)
            await self.seek_wait(back)
        return records, active

    def resume_partitions(self, tps: Any) -> None:
        if self.defer_resume:  # recovery is about to seek these: resume after (point 5)
            self._resume_after_seek = (self._resume_after_seek or set()) | set(tps)
            return
        super().resume_partitions(tps)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        # aiokafka seeks only the partitions with a committed offset above 0; the others
        # keep whatever position earlier fetching left them at (seen: the end of the
        # repartition topic after a kill). Put them at their first record.
        fresh = {
            tp
            for tp in self.assignment()
            if not self._is_changelog_tp(tp) and not self._committed_offset.get(tp)
        }
        if fresh:
            for tp, offset in (await self.earliest_offsets(*fresh)).items():
                if offset is not None:
                    await self.seek(tp, offset)
        if self.defer_resume:  # point 5
            self.defer_resume = False
            tps, self._resume_after_seek = self._resume_after_seek or set(), None
            super().resume_partitions(tps)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """Where each changelog partition ends, from the broker (point 6 of the module doc)."""
        thread: Any = self._thread
        ends = await thread.call_thread(thread._ensure_consumer().end_offsets, list(partitions))
        if not self.in_transaction:
            return ends  # type: ignore[no-any-return]
        conf, transport = self.app.conf, self.transport
        reader = AIOKafkaConsumer(
            bootstrap_servers=faust_aiokafka.server_list(transport.url, transport.default_port),
            client_id=f"{conf.broker_client_id}-recovery",
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=conf.consumer_max_fetch_size,
            **faust_aiokafka.credentials_to_aiokafka_auth(
                conf.broker_credentials, conf.ssl_context
            ),
        )
        await reader.start()
        try:
            return await after_last_records(reader, ends)
        finally:
            await reader.stop()

    async def position(self, tp: TP) -> int | None:
        """For a changelog partition being recovered: the last offset recovery applied
        (point 7 of the module doc; Faust's only caller is that guess)."""
        applied = self.app.tables.recovery.active_offsets.get(tp)
        if applied is not None and self._is_changelog_tp(tp):
            return int(applied)
        return await super().position(tp)  # type: ignore[no-any-return]

    async def force_commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Commit task by task, each under its own barrier (point 1): a task busy with a
        long batch, or whose sink is not written yet, is left for a later commit and holds
        up no other task."""
        app: ShadowApp = self.app  # type: ignore[assignment]
        if app.failed is not None:
            return False
        tasks = {app.task_id(tp) for tp in self._filter_tps_with_pending_acks(topics)}
        if self.in_transaction and topics is None:  # records from timers, no input
            tasks |= self.transactions.dirty()  # type: ignore[attr-defined]
        done = False
        deadline = time.monotonic() + self.app.conf.broker_commit_interval / 2
        for tid in sorted(tasks):
            done |= await self._commit_task(tid, topics, start_new_transaction, deadline)
        return done

    async def _commit_task(
        self, tid: str, topics: Any, start_new_transaction: bool, deadline: float
    ) -> bool:
        app: ShadowApp = self.app  # type: ignore[assignment]
        barrier = app.barriers[tid]
        wait_s = max(deadline - time.monotonic(), 0.05)
        try:  # a fair lock: a task between two batches lets the commit in next
            await asyncio.wait_for(barrier.acquire(), wait_s)
        except TimeoutError:
            return False  # a long batch (a slow model): the next commit tries again
        try:
            if app.failed is not None:
                return False
            # Its inputs as acked now, under its barrier: a batch may have run while the
            # commit waited for the tasks before this one.
            acked = self._filter_tps_with_pending_acks(topics)
            tps = {tp for tp in acked if app.task_id(tp) == tid}
            await app.before_commit(tps)
            done = await super().force_commit(tps, start_new_transaction=start_new_transaction)
            if self.in_transaction:
                await self._commit_records(tid, start_new_transaction)
        except CommitDeferred:
            return False
        except Exception as exc:
            self.log.exception("commit failed: %r", exc)
            app.failed = exc
            await app.crash(exc)
            raise
        finally:
            barrier.release()
        return done

    async def _commit_records(self, tid: str, start_new_transaction: bool) -> None:
        """Commit the records task `tid` produced with no input to commit (timers), only
        if every input it processed is committed by now. Otherwise its transaction holds
        state changed by records whose offsets it would not carry, and a restart from those
        offsets would apply them twice (seen: windows counting 2,772 requests twice after ten
        kills); it stays open for the commit that carries them."""
        app: ShadowApp = self.app  # type: ignore[assignment]
        behind = {
            tp: offset
            for tp, offset in self._processed().items()
            if app.task_id(tp) == tid and (self._committed_offset.get(tp) or 0) < offset
        }
        if behind:
            log.info("%s: records wait for the offsets of %s", tid, behind)
            return
        await self.transactions.commit_records(tid, start_new_transaction)  # type: ignore[attr-defined]


async def after_last_records(
    reader: AIOKafkaConsumer, ends: Mapping[TP, int], timeout_s: float = 60.0
) -> dict[TP, int]:
    """Per partition, the offset right after the last record `reader` (read_committed)
    gets below `ends` (the last stable offsets), or 0 when it gets none: nothing to read
    (a first offset above 0 would have recovery wait for a record that never comes, point
    7). Transaction markers and aborted records at the tail are skipped. Reads backwards from
    the end in growing windows; usually the first 64 offsets hold a record."""
    begins = await reader.beginning_offsets(list(ends))
    out = dict.fromkeys(ends, 0)
    todo = {tp: end for tp, end in ends.items() if end > begins[tp]}
    window = 64
    while todo:
        starts = {tp: max(begins[tp], end - window) for tp, end in todo.items()}
        reader.assign(list(todo))
        for tp, start in starts.items():
            reader.seek(tp, start)
        last: dict[TP, int] = {}
        deadline = time.monotonic() + timeout_s
        while [tp for tp, end in todo.items() if await reader.position(tp) < end]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"changelog tails unread after {timeout_s} s: {todo}")
            for tp, records in (await reader.getmany(timeout_ms=200)).items():
                below = [r.offset for r in records if r.offset < todo[tp]]
                if below:
                    last[tp] = max(below)
        for tp in list(todo):
            if tp in last or starts[tp] == begins[tp]:
                out[tp] = last[tp] + 1 if tp in last else 0
                del todo[tp]
        window *= 8
    return out


class ShadowProducer(faust_aiokafka.Producer):
    """Faust's producer, with transactions that may stay open through a stall (point 1)."""

    def _settings_extra(self) -> Mapping[str, Any]:
        extra = dict(super()._settings_extra())
        if self.app.in_transaction:
            extra["transaction_timeout_ms"] = TRANSACTION_TIMEOUT_MS
        return extra


class ShadowTransport(faust_aiokafka.Transport):
    Consumer = ShadowConsumer
    Producer = ShadowProducer
    TransactionManager = TaskTransactionManager
