"""Per-partition state on Faust tables: which partition a write belongs to, and batching.

A *task* is one partition number of a group of co-partitioned topics (for example
partition 3 of ``shadow.events``, of the repartition topic and of the pairing changelog).
Everything the worker does for a task -- state it changes, records it produces, offsets it
commits -- belongs to that partition; `in_task` says which one is running.

* `TaskTable` is a Faust table (``bytes`` keys and values, changelogged, compacted) used
  for what Faust does well: declaring the changelog topic and rebuilding the state from
  it when a partition is assigned. Its keys are prefixed with the partition
  (``b"3|req-42"``), so a partition's keys can be found again.
* `TaskState` is one partition's slice of a `TaskTable` as a dict of live objects. It is
  persisted once per batch: `changes()` hands the changelog records of the keys changed
  since the last call (a window updated 500 times in a batch costs one record), and the
  stage produces them with its other records, in the task's transaction. Faust's own
  table write path (one buffered future per key) is bypassed; the records are exactly
  those Faust would write, so its recovery reads them back.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from faust.tables.table import Table
from faust.types import TP
from shadowlens.streams.wire import MAX_RECORD_BYTES

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

ChangelogRecord = tuple[bytes, bytes | None]  # key, value (None deletes the key)

_CURRENT: contextvars.ContextVar[TP | None] = contextvars.ContextVar(
    "shadowlens_task", default=None
)


def current_task() -> TP | None:
    """The source partition being processed in this asyncio context, if any."""
    return _CURRENT.get()


@contextmanager
def in_task(tp: TP) -> Iterator[None]:
    token = _CURRENT.set(tp)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class TaskTable(Table):
    """A changelogged table of bytes whose keys carry their partition."""

    def partition_for_key(self, key: Any) -> int | None:
        task = current_task()  # only reached by a direct table write, which we never do
        if task is None:
            raise RuntimeError(f"table {self.name!r} written outside a task")
        return task.partition

    def partition_keys(self, partition: int) -> list[bytes]:
        prefix = f"{partition}|".encode()
        return [k for k in list(self.data) if isinstance(k, bytes) and k.startswith(prefix)]

    def forget_partition(self, partition: int) -> None:
        """Drop a revoked partition's keys from local memory (not from the changelog), so
        a later assignment rebuilds it from the changelog alone."""
        store = self.data
        for key in self.partition_keys(partition):
            store.data.pop(key, None)  # the memory store's dict: no changelog record


# A worker rebuilds its tables from the whole changelog at every start (memory store).
# Compaction keeps each key's last value only, but never in the active segment, and with
# Kafka's 1 GiB default a changelog is one active segment for hours: the smallest segment
# that still holds the largest record lets the cleaner keep recovery short.
CHANGELOG_CONFIGS = {
    "max.message.bytes": str(MAX_RECORD_BYTES),
    "segment.bytes": str(MAX_RECORD_BYTES),
}


def task_table(app: Any, name: str, partitions: int) -> TaskTable:
    """Declare a `TaskTable` on `app`."""
    table = TaskTable(
        app,
        name=name,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        beacon=app.tables.beacon,
        extra_topic_configs=CHANGELOG_CONFIGS,
    )
    return app.tables.add(table)  # type: ignore[no-any-return]


def _same(key: Any) -> Any:
    return key


class TaskState(MutableMapping[K, V], Generic[K, V]):
    """One partition of a `TaskTable` as live objects; see the module doc.

    `key_str` / `str_key` map the view's keys to strings and back (for keys that are not
    strings, such as `WindowKey`). With `delay_deletes`, the record that deletes a key goes
    out with the next batch's changes, not its own: for state where a deleted value that
    comes back is harmless, and a value gone while the input that deleted it is read again
    is not (the pairing table: `shadowlens.streams.pairing_stage`).
    """

    def __init__(
        self,
        table: TaskTable,
        partition: int,
        encode: Callable[[V], bytes],
        decode: Callable[[bytes], V],
        *,
        key_str: Callable[[K], str] = _same,
        str_key: Callable[[str], K] = _same,
        delay_deletes: bool = False,
    ) -> None:
        self.table = table
        self.partition = partition
        self._encode = encode
        self._key_str = key_str
        self._prefix = f"{partition}|"
        self._values: dict[K, V] = {}
        self._dirty: set[K] = set()
        self._deleted: set[K] = set()
        self._delay_deletes = delay_deletes
        self._delayed: set[K] = set()  # deleted one batch ago, record not sent yet
        cut = len(self._prefix)
        for key in table.partition_keys(partition):
            raw = table.data[key]
            if raw is not None:
                self._values[str_key(key.decode()[cut:])] = decode(raw)

    def __getitem__(self, key: K) -> V:
        return self._values[key]

    def get(self, key: K, default: Any = None) -> Any:
        return self._values.get(key, default)

    def __setitem__(self, key: K, value: V) -> None:
        self._values[key] = value
        self._dirty.add(key)
        self._deleted.discard(key)
        self._delayed.discard(key)

    def __delitem__(self, key: K) -> None:
        del self._values[key]
        self._dirty.discard(key)
        self._deleted.add(key)

    def __iter__(self) -> Iterator[K]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def record(self, key: K) -> ChangelogRecord:
        """The changelog record of `key`'s value now."""
        return self._key_bytes(key), self._encode(self._values[key])

    def _key_bytes(self, key: K) -> bytes:
        return (self._prefix + self._key_str(key)).encode()

    def changes(self) -> list[ChangelogRecord]:
        """The changelog records of every key changed since the last call (deletions one
        call later with `delay_deletes`)."""
        records = [self.record(k) for k in self._dirty]
        gone, self._deleted = self._deleted, set()
        if self._delay_deletes:
            gone, self._delayed = self._delayed, gone
        records += [(self._key_bytes(k), None) for k in gone]
        self._dirty.clear()
        return records


class Positions:
    """The last offset processed per source partition: a record seen again (Faust can
    redeliver after a seek) is skipped, since the state already holds it; a record that
    skips offsets on a topic that has no gaps (no transaction markers, no compaction) means
    the consumer lost records, and is counted and logged as an error."""

    def __init__(self, counts: Any, gapless: set[str] | None = None) -> None:
        self.counts = counts
        self.gapless = gapless or set()
        self._last: dict[tuple[str, int], int] = {}

    def fresh(self, msg: Any) -> bool:
        key = (msg.topic, msg.partition)
        last = self._last.get(key)
        if last is not None and msg.offset <= last:
            self.counts["redelivered"] += 1
            return False
        if last is not None and msg.offset > last + 1 and msg.topic in self.gapless:
            self.counts["input_gaps"] += msg.offset - last - 1
            first, last_missing = last + 1, msg.offset - 1
            log.error("%s/%s: offsets %d..%d never reached the agent", *key, first, last_missing)
        if last is None:
            log.info("%s/%s: processing from offset %d", *key, msg.offset)
        self._last[key] = msg.offset
        return True

    def applied(self, *tps: TP) -> dict[str, int]:
        """The last offset processed in each of `tps` (a task's inputs), to be stored with
        the state it produced: see `resume`."""
        return {f"{t}/{p}": self._last[(t, p)] for t, p in tps if (t, p) in self._last}

    def resume(self, applied: Mapping[str, int]) -> None:
        """Skip what a task rebuilt from its changelog already holds (`applied`, read back
        from it). Under at_least_once the committed offsets trail the state, and a record
        applied twice is not harmless: a half whose request the state has closed and
        forgotten would open it again, as an orphan (docs/streaming.md)."""
        for name, offset in applied.items():
            topic, _, partition = name.rpartition("/")
            self._last[(topic, int(partition))] = int(offset)
            log.info("%s: resuming after offset %d, which the state holds", name, offset)

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """The offset to commit per partition: right after the last record processed."""
        return {key: last + 1 for key, last in self._last.items()}

    def lags(self, consumer: Any) -> dict[tuple[str, int], int]:
        """Records behind the broker's high watermark, per partition processed here."""
        out = {}
        for (topic, partition), last in self._last.items():
            high = consumer.highwater(TP(topic, partition))
            if high is not None:
                out[(topic, partition)] = max(0, high - last - 1)
        return out

    def keep(self, assigned: set[TP]) -> None:
        """Forget partitions no longer assigned: another worker processes them now."""
        for key in list(self._last):
            if TP(*key) not in assigned:
                del self._last[key]


Record = tuple[str, bytes | None, bytes | None, int | None, list[tuple[str, bytes]] | None]


def changelog(state: TaskState[Any, Any]) -> list[Record]:
    """`state.changes()` as records for its table's changelog partition."""
    topic = state.table.changelog_topic_name
    return [(topic, key, value, state.partition, None) for key, value in state.changes()]


def changelog_record(state: TaskState[Any, Any], key: Any) -> Record:
    """`key`'s value in `state` as a record for its changelog partition, for a transaction
    other than the task's (a control message's mark, `shadowlens.streams.judging_stage`)."""
    key_bytes, value = state.record(key)
    return (state.table.changelog_topic_name, key_bytes, value, state.partition, None)


async def send(app: Any, records: list[Record]) -> list[Awaitable[Any]]:
    """Hand `records` to the producer (in the running task's transaction under
    exactly-once); the broker has them once every returned future is done. Several tasks
    can send and then wait once (`produce` waits for one list)."""
    if not records:
        return []
    producer = await app.maybe_start_producer()
    return [
        await producer.send(topic, key, value, partition, None, headers)
        for topic, key, value, partition, headers in records
    ]


async def produce(app: Any, records: list[Record]) -> None:
    """Send `records` (in the running task's transaction under exactly-once) and wait
    until the broker has them all."""
    await asyncio.gather(*await send(app, records))


async def produce_tasks(app: Any, records: Iterable[tuple[TP, list[Record]]]) -> None:
    """Send each task's records in its task (transaction), then wait once until the broker
    has them all."""
    futures: list[Awaitable[Any]] = []
    for tp, task_records in records:
        with in_task(tp):
            futures += await send(app, task_records)
    await asyncio.gather(*futures)
