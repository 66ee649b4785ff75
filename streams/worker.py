"""`shadowlens worker`: check the topics, build the app, run a Faust worker until stopped.

SIGTERM / SIGINT stop it cleanly: agents finish their batch, offsets are committed after
ClickHouse is flushed, the store is closed. A killed worker loses nothing that was
committed; its partitions move to the other workers of the group (or to it again when it
restarts), which rebuild the tables from their changelogs.
"""

from __future__ import annotations

import asyncio

import faust
from shadowlens.judge.policy import Policy
from shadowlens.streams.app import build_app
from shadowlens.streams.config import Settings
from shadowlens.streams.topics import ensure_topics


def run_worker(settings: Settings, policy: Policy) -> None:
    """Run until a signal stops the worker (raises SystemExit like every Faust worker)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings.state_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    topology = loop.run_until_complete(ensure_topics(settings))
    worker = build_app(settings, policy, topology)
    if worker.metrics is not None and settings.metrics_port is not None:
        worker.metrics.start_http_server(settings.metrics_port, settings.metrics_addr)
    runner = faust.Worker(
        worker.app,
        loop=loop,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
    )
    try:
        runner.execute_from_commandline()
    finally:
        worker.pairing.stop()
        worker.judging.writer.shutdown()
        worker.log_stats()
