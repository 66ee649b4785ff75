"""The Faust app of `shadowlens worker`: configuration and wiring only.

    events + repartition --[pairing_stage]--> shadow.pairs --[judging_stage]--> shadow.control
          (N tasks)          |   |                 (P tasks)        |
                 dead letters   repartition                  ClickHouse (single writer)

See docs/streaming.md for the design: tasks, watermarks, commits and exactly-once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from shadowlens.judge.policy import Policy
from shadowlens.streams.config import Settings
from shadowlens.streams.judging_stage import JudgingStage
from shadowlens.streams.kafka_security import faust_credentials
from shadowlens.streams.metrics import Metrics
from shadowlens.streams.monitor import QuietMonitor
from shadowlens.streams.pairing_stage import PairingStage
from shadowlens.streams.topics import Topology
from shadowlens.streams.transactions import ShadowApp
from shadowlens.streams.wire import MAX_RECORD_BYTES

log = logging.getLogger("shadowlens.worker")

STATS_MARK = "shadowlens-stats"
# Records per fetch handed to the streams. Faust's default (no limit) hands over all that
# was prefetched at once, and what does not fit the stream buffer (4,096) waits record by
# record, each at Faust's full per-message cost (`streams.delivery`). With at most 1,000 a
# fetch few find it full: a no-op agent's CPU per event fell ~20 % (docs/streaming.md).
MAX_POLL_RECORDS = 1000


@dataclass
class Worker:
    app: ShadowApp
    pairing: PairingStage
    judging: JudgingStage
    metrics: Metrics | None = None

    def observe_lag(self) -> None:
        if self.metrics is None:
            return
        consumer = self.app.consumer
        for positions in (self.pairing.positions, self.judging.positions):
            for (topic, partition), lag in positions.lags(consumer).items():
                self.metrics.set_consumer_lag(topic, partition, lag)

    def stats(self) -> dict[str, object]:
        written = self.judging.writer.written
        counts = Counter(self.pairing.counts)  # both count input_gaps and redelivered
        counts.update(self.judging.counts)
        stats = {**self.pairing.stats(), **self.judging.stats(), **counts, "written": written}
        stats["store"] = self.judging.writer.health()
        return {"at": time.time(), **stats}

    def log_stats(self) -> None:
        log.info("%s %s", STATS_MARK, orjson.dumps(self.stats()).decode())


def new_app(settings: Settings, topology: Topology) -> ShadowApp:
    """The Faust app with the worker's settings and no agents (the bench's no-op agent
    measures Faust itself on exactly these)."""
    s = settings
    app = ShadowApp(
        s.app_id,
        broker=[f"kafka://{host}" for host in s.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(s),  # TLS / SASL from SHADOWLENS_KAFKA_*
        store="memory://",
        datadir=str(s.state_dir / s.app_id),
        autodiscover=False,
        processing_guarantee=s.processing_guarantee,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=s.heartbeat_interval_s,
        broker_rebalance_timeout=s.rebalance_timeout_s,
        broker_commit_interval=s.commit_interval_s,
        broker_commit_every=s.commit_every,
        topic_partitions=topology.events_partitions,
        topic_replication_factor=s.replication_factor,
        table_standby_replicas=0,
        producer_acks=-1,
        producer_max_request_size=MAX_RECORD_BYTES,
        producer_max_batch_size=s.producer_batch_bytes,
        consumer_max_fetch_size=MAX_RECORD_BYTES,
        broker_max_poll_records=MAX_POLL_RECORDS,
        Monitor=QuietMonitor,  # no per-message stats for Faust's web views, which we do not serve
        web_enabled=s.web_port is not None,
        web_port=s.web_port or 6066,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
    )
    # Tables buffer their changelog records; a batch updates up to `batch_size` keys at once.
    app.producer.buffer.max_messages = 4 * s.batch_size
    return app


def build_app(settings: Settings, policy: Policy, topology: Topology) -> Worker:
    s = settings
    app = new_app(settings, topology)
    limits = policy.limits
    metrics = (
        Metrics(max_experiments=limits.max_experiments, max_segments=limits.max_segments)
        if s.metrics_port is not None
        else None
    )
    pairing = PairingStage(
        app, s, policy, topology.events_partitions, topology.pairs_partitions, metrics
    )
    judging = JudgingStage(app, s, policy, topology.pairs_partitions, metrics)
    pairing.register()
    judging.register(dead_letters=topology.store_dead_letters)
    worker = Worker(app, pairing, judging, metrics)

    async def stats() -> None:
        worker.log_stats()
        worker.observe_lag()

    async def announce() -> None:
        log.info("shadowlens worker: %s; %s", s.describe(), topology)

    async def health(view: Any, request: Any) -> Any:
        """Faust web (SHADOWLENS_WEB_PORT): 503 while ClickHouse writes fail."""
        writer = judging.writer
        return view.json(writer.health(), status=200 if writer.healthy else 503)

    app.timer(s.stats_interval_s, name="stats")(stats)
    app.task(announce)
    if s.web_port is not None:
        app.page("/health/")(health)
    return worker
