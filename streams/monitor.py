"""Faust's Monitor sensor without its per-message bookkeeping.

Faust's `Monitor` counts every message and every stream event in dicts and times each one,
for Faust's web /stats views and its metrics sensors. The worker serves neither: its
metrics are `streams.metrics` and its health page is `streams.app`'s. On the worker's no-op
agent that bookkeeping was ~10 % of Faust's CPU per event (docs/streaming.md, "Faust's cost
per event"). Here the per-message hooks do nothing; the rest (commits, rebalances, sends,
tables) is Faust's own.
"""

from __future__ import annotations

from typing import Any

from faust.sensors.monitor import Monitor


class QuietMonitor(Monitor):
    """`Monitor` with no per-message or per-event work (see the module doc)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        pass

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        pass

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        pass
