"""How the worker commits: one barrier, sinks flushed first, one transaction per task.

Faust commits offsets on a timer while agents keep running. Three things are added here:

1. A processing barrier. Agents and timers hold it while they process a batch *and ack
   it*; a commit holds it from the moment it picks the offsets until the broker has them.
   A commit therefore never sees a half-processed batch: every acked record's outputs have
   been produced, and nothing is produced for a record that is not acked yet.
2. Sinks flush before the offsets go out (`ShadowApp.before_commit`): a ClickHouse insert
   that fails fails the commit, so the records are processed again instead of being lost.
   A hook that raises `CommitDeferred` (the store is down, its rows are buffered and
   retried: `shadowlens.streams.ch_writer`) skips this commit: nothing is committed, nothing fails.
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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from faust.transport.consumer import TransactionManager
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from shadowlens.streams.delivery import EagerDelivery
from shadowlens.streams.task_state import Positions, current_task

CommitHook = Callable[[], Awaitable[None]]

log = logging.getLogger(__name__)


class CommitDeferred(Exception):
    """Raised by a commit hook: not now (e.g. the sink is down and retrying). The commit
    is skipped, no offset goes out; a later commit tries again."""


class ShadowApp(faust.App):
    """A Faust app whose transport commits through the barrier (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.barrier = asyncio.Lock()
        self.commit_hooks: list[CommitHook] = []
        self.positions: list[Positions] = []  # every agent's, see ShadowConsumer
        self.failed: BaseException | None = None
        self.on_rebalance_complete.connect(self._seek_before_resume)

    @asynccontextmanager
    async def processing(self) -> AsyncIterator[None]:
        """Hold the barrier for one batch or timer run. If it fails, nothing is committed
        any more and the worker stops: its positions and state may be ahead of what it
        produced, and only a restart from the last commit makes them agree again."""
        error: Exception | None = None
        async with self.barrier:
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

    async def _seek_before_resume(self, sender: Any = None, **_: Any) -> None:
        # Sent by Recovery right before it resumes the source partitions and seeks them.
        consumer: ShadowConsumer = self.consumer  # type: ignore[assignment]
        consumer.defer_resume = True

    async def before_commit(self) -> None:
        for hook in self.commit_hooks:
            await hook()

    def _new_transport(self) -> Any:
        return ShadowTransport(self.conf.broker_consumer, self)


class TaskTransactionManager(TransactionManager):
    """Transactions per task (source partition), not per destination partition."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dirty: set[str] = set()

    def transactional_id(self, tp: TP) -> str:
        group = self.app.assignor.group_for_topic(tp.topic)
        return f"{self.app.conf.id}-{group}-{tp.partition}"

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
        """Commit every transaction with offsets to commit or records produced since the
        last commit (Faust only commits those with offsets)."""
        await self.producer.flush()  # changelog records buffered by tables join their txn
        by_tid: dict[str, dict[TP, int]] = defaultdict(dict)
        for tp, offset in offsets.items():
            by_tid[self.transactional_id(tp)][tp] = offset
        for tid in sorted(set(by_tid) | self._dirty):
            await self._commit_one(tid, by_tid.get(tid, {}), start_new_transaction)
        self._dirty.clear()
        return True

    async def _commit_one(self, tid: str, offsets: dict[TP, int], start_new: bool) -> None:
        producer = self.producer
        txn = producer._transaction_producers.get(tid)  # type: ignore[attr-defined]
        if txn is None:
            if offsets:
                raise RuntimeError(f"no transactional producer {tid} to commit {offsets}")
            return  # revoked since: the next owner's producer fences this transaction
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

    def _filter_committable_offsets(self, tps: Any) -> dict[TP, int]:
        """After the last record processed in each partition (point 4 of the module doc)."""
        app: ShadowApp = self.app  # type: ignore[assignment]
        processed: dict[tuple[str, int], int] = {}
        for positions in app.positions:
            processed.update(positions.next_offsets())
        offsets: dict[TP, int] = {}
        for tp in tps:
            offset = processed.get((tp.topic, tp.partition))
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
        app: ShadowApp = self.app  # type: ignore[assignment]
        if app.failed is not None:
            return False
        async with app.barrier:
            try:
                await app.before_commit()
                done = await super().force_commit(
                    topics, start_new_transaction=start_new_transaction
                )
                if self.in_transaction and topics is None:  # records from timers, no input
                    await self.transactions.commit({}, start_new_transaction)
            except CommitDeferred:
                return False
            except Exception as exc:
                self.log.exception("commit failed: %r", exc)
                app.failed = exc
                await app.crash(exc)
                raise
        return done


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


class ShadowTransport(faust_aiokafka.Transport):
    Consumer = ShadowConsumer
    TransactionManager = TaskTransactionManager
