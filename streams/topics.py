"""The worker's topics: found or created before the app starts, partition counts checked.

* ``shadow.events``: the gateways' topic. Used as is; created with
  ``SHADOWLENS_EVENTS_PARTITIONS`` only when missing. Its partition count N fixes the
  number of pairing tasks.
* ``shadow.events.repartition``: must have N partitions (partition p of both topics is
  pairing task p).
* ``shadow.pairs`` and ``shadow.deadletter``: P partitions (default 1, so one worker
  judges and writes ClickHouse). The dead-letter topic is stored in ClickHouse only when
  it has P partitions too: then Faust gives both to the same worker.
* ``shadow.commands``: signed operator commands (`shadowlens control`), keyed by
  experiment; P partitions like ``shadow.pairs``, so a command lands in the partition
  whose task judges its experiment (and Faust gives both to the same worker).
* ``shadow.control``: read by routers; log-compacted, so a router that starts late reads
  the latest message per experiment (a heartbeat carries the current epoch and percent)
  instead of the whole history. Compaction waits an hour, so recent decisions stay
  readable in order; the full history is in ClickHouse (decisions table).

Never change a partition count while workers run: pairing state lives per partition.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from shadowlens.streams.config import Settings
from shadowlens.streams.kafka_security import aiokafka_options
from shadowlens.streams.wire import MAX_RECORD_BYTES

DAY_MS = 24 * 3600 * 1000
HOUR_MS = 3600 * 1000
CONTROL_TOPIC_CONFIG = {"cleanup.policy": "compact", "min.compaction.lag.ms": str(HOUR_MS)}


class TopologyError(RuntimeError):
    """The topics exist with partition counts the worker cannot use."""


@dataclass(frozen=True, slots=True)
class Topology:
    events_partitions: int
    pairs_partitions: int
    deadletter_partitions: int

    @property
    def store_dead_letters(self) -> bool:
        return self.deadletter_partitions == self.pairs_partitions


async def _partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    # list first: describing a missing topic would auto-create it on brokers that allow it
    existing = set(await admin.list_topics())
    names = [n for n in names if n in existing]
    if not names:
        return {}
    described = await admin.describe_topics(names)
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


async def ensure_topics(settings: Settings) -> Topology:
    """Create the missing topics; return the partition counts the app is built with."""
    s = settings
    admin = AIOKafkaAdminClient(
        bootstrap_servers=s.kafka_bootstrap,
        client_id=f"{s.app_id}-admin",
        **aiokafka_options(s),  # TLS / SASL
    )
    await admin.start()
    try:
        names = [s.topic_events, s.topic_repartition, s.topic_pairs]
        names += [s.topic_deadletter, s.topic_control, s.topic_commands]
        counts = await _partition_counts(admin, names)
        n = counts.get(s.topic_events, s.events_partitions)
        p = counts.get(s.topic_pairs, s.pairs_partitions)
        big = {"max.message.bytes": str(MAX_RECORD_BYTES)}
        wanted = {
            s.topic_events: (n, {}),
            s.topic_repartition: (n, {"retention.ms": str(7 * DAY_MS), **big}),
            s.topic_pairs: (p, {"retention.ms": str(7 * DAY_MS), **big}),
            s.topic_deadletter: (p, {"retention.ms": str(30 * DAY_MS)}),
            s.topic_control: (s.control_partitions, CONTROL_TOPIC_CONFIG),
            s.topic_commands: (p, {"retention.ms": str(30 * DAY_MS)}),
        }
        missing = [
            NewTopic(name, parts, s.replication_factor, topic_configs=configs)
            for name, (parts, configs) in wanted.items()
            if name not in counts
        ]
        if missing:
            await admin.create_topics(missing, timeout_ms=30_000)
            counts.update({t.name: t.num_partitions for t in missing})
        if counts[s.topic_repartition] != n:
            raise TopologyError(
                f"{s.topic_repartition} has {counts[s.topic_repartition]} partitions but "
                f"{s.topic_events} has {n}: they must match (partition p of both is one "
                "pairing task). Recreate the repartition topic with the same count."
            )
        if counts[s.topic_commands] != p:
            raise TopologyError(
                f"{s.topic_commands} has {counts[s.topic_commands]} partitions but "
                f"{s.topic_pairs} has {p}: they must match (a command goes to the task that "
                "judges its experiment). Recreate the commands topic with the same count."
            )
        return Topology(n, p, counts[s.topic_deadletter])
    finally:
        await admin.close()
